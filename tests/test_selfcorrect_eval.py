"""Two-attempt evaluation: SCoRe's metrics from greedy first and second attempts."""

from __future__ import annotations

from selfimprove.policy import HFPolicy
from selfimprove.tasks import make_task

PARAMS = {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20}


def test_two_attempt_evaluation_reports_scores_metrics(small_policy: HFPolicy) -> None:
    from selfimprove.eval.selfcorrect import evaluate_two_attempts

    task = make_task("countdown", PARAMS)
    metrics, records = evaluate_two_attempts(small_policy, task, task.problems("test", 4), max_new_tokens=5)
    assert set(metrics) == {"acc_t1", "acc_t2", "delta", "delta_i_to_c", "delta_c_to_i", "edit_distance_ratio"}
    assert len(records) == 4 and all({"attempt1", "attempt2"} <= r.keys() for r in records)
    assert metrics["delta"] == metrics["delta_i_to_c"] - metrics["delta_c_to_i"]


def test_self_refine_evaluation_reports_scores_metrics(small_policy: HFPolicy) -> None:
    from selfimprove.eval.selfcorrect import evaluate_self_refine

    task = make_task("countdown", PARAMS)
    progress: list[int] = []
    metrics, records = evaluate_self_refine(small_policy, task, task.problems("test", 5), max_new_tokens=4, batch_size=2, on_batch=progress.append)
    assert set(metrics) == {"acc_t1", "acc_t2", "delta", "delta_i_to_c", "delta_c_to_i", "edit_distance_ratio"}
    assert progress == [2, 2, 1]
    assert [r["id"] for r in records] == [p.id for p in task.problems("test", 5)]
    assert all({"attempt1", "critique", "attempt2", "correct1", "correct2"} <= r.keys() for r in records)
    assert metrics["delta"] == metrics["delta_i_to_c"] - metrics["delta_c_to_i"]


class ScriptedPolicy:
    """Answers from a script and records every context it was asked to continue, so the test sees the
    exact self-refine layout: prompt | attempt 1 | review | critique | retry | attempt 2."""

    eos_ids = [0]

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.contexts: list[str] = []

    def encode_completion(self, text: str, *, add_eos: bool = True) -> list[int]:
        return [ord(ch) for ch in text] + ([0] if add_eos else [])

    def generate(self, prompts, params):  # type: ignore[no-untyped-def]
        return self.generate_ids([self.encode_completion(p, add_eos=False) for p in prompts], params)

    def generate_ids(self, contexts, params):  # type: ignore[no-untyped-def]
        from selfimprove.policy.base import Completion

        assert params.temperature == 0.0  # greedy throughout
        out = []
        for i, ids in enumerate(contexts):
            context = "".join(chr(t) for t in ids)
            self.contexts.append(context)
            key = context[0]  # the one-letter prompt
            text = self.answers[key + ":" + str(context.count("|"))]
            out.append(Completion(prompt_index=i, prompt_ids=list(ids), token_ids=self.encode_completion(text), text=text))
        return out


def test_self_refine_reviews_every_problem_right_or_wrong() -> None:
    from selfimprove.eval.selfcorrect import evaluate_self_refine
    from selfimprove.tasks.base import Problem, Task, Verdict

    class Exact(Task):
        name = "exact"

        def problem(self, split, index):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def verify(self, problem: Problem, text: str) -> Verdict:
            return Verdict.right() if text == problem.answer else Verdict.wrong("no")

    # The markers contain "|" so the script knows the turn: 0 bars = attempt 1, 1 = critique, 2 = attempt 2.
    policy = ScriptedPolicy({
        "a:0": "1", "a:1": "ok", "a:2": "1",  # right, kept: c->c
        "b:0": "1", "b:1": "hmm", "b:2": "2",  # wrong, fixed: i->c
        "c:0": "3", "c:1": "no", "c:2": "4",  # right, broken: c->i
        "d:0": "5", "d:1": "eh", "d:2": "6",  # wrong, wrong: i->i
    })
    problems = [Problem(id=k, prompt=k, answer=v) for k, v in (("a", "1"), ("b", "2"), ("c", "3"), ("d", "7"))]
    metrics, records = evaluate_self_refine(policy, Exact(), problems, review="|R", retry_prompt="|T")  # type: ignore[arg-type]
    assert metrics["acc_t1"] == 0.5 and metrics["acc_t2"] == 0.5 and metrics["delta"] == 0.0
    assert metrics["delta_i_to_c"] == 0.25 and metrics["delta_c_to_i"] == 0.25
    # every problem got a critique, right first attempts included, and attempt 2 saw the whole layout
    assert [r["critique"] for r in records] == ["ok", "hmm", "no", "eh"]
    assert policy.contexts[4:8] == ["a1|R", "b1|R", "c3|R", "d5|R"]
    assert policy.contexts[8:] == ["a1|Rok|T", "b1|Rhmm|T", "c3|Rno|T", "d5|Reh|T"]
    assert [(r["correct1"], r["correct2"]) for r in records] == [(True, True), (False, True), (True, False), (False, False)]
