"""Multi-turn rollouts: model tokens kept as sampled, observations masked, turns batched, limits kept."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pytest
import torch

from selfimprove.chat import tool_result, user
from selfimprove.envs.base import Conversation, Environment, Reply, Turn
from selfimprove.envs.plugins import make_env
from selfimprove.policy.base import Completion, SamplerWrapper, SamplingParams
from selfimprove.policy.hf import HFPolicy
from selfimprove.policy.tiny import build_tiny_model
from selfimprove.rollout.conversation import Limits, run_conversations
from selfimprove.rollout.demonstrations import demonstration_episodes, recorded_episode
from selfimprove.rollout.episode import collate
from selfimprove.tasks import make_task
from selfimprove.tasks.base import Problem


class Scripted(SamplerWrapper):
    """A sampler whose every turn is `reply(context text)`; each token's log-prob is -(its position + 1)/10
    (so a test can see they reach the batch untouched), and generate calls are counted."""

    def __init__(self, inner: HFPolicy, reply: Callable[[str], str]) -> None:
        super().__init__(inner)
        self.reply = reply
        self.calls: list[int] = []

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *, generator: Any = None) -> list[Completion]:
        self.calls.append(len(prompt_ids) * params.n)
        out = []
        for i, context in enumerate(prompt_ids):
            for _ in range(params.n):
                text = self.reply(self.inner.detokenize(context))
                stopped = next((s for s in params.stop if s in text), None)
                if stopped is not None:
                    text = text[: text.index(stopped) + len(stopped)]
                tokens = self.inner.encode_completion(text, add_eos=stopped is None)[: params.max_new_tokens]
                reason = "stop" if stopped else "eos" if tokens[-1] in self.inner.eos_ids else "length"
                out.append(Completion(i, list(context), tokens, text, [-(k + 1) / 10 for k in range(len(tokens))], reason))
        return out


@pytest.fixture(scope="module")
def tiny() -> HFPolicy:
    model, tokenizer = build_tiny_model("small")
    return HFPolicy(model, tokenizer)


def chain_env(**params: Any) -> Environment:
    return make_env("tools", make_task("chain", {"num_steps": 3}), tools=["calc"], params=params)


def solver(context: str) -> str:
    """Calls the calculator for each step of `start; +a *b -c:` in turn, then answers the last result."""
    head, _, rest = context.partition(":\n")
    start, ops = head.split("; ")
    done = [line for line in rest.split("\n") if line.startswith("<<")]
    values = [start] + [line.rpartition("=")[2] for line in done]
    steps = ops.split()
    return f"<<calc {values[-1]}{steps[len(done)]}>>" if len(done) < len(steps) else values[-1]


def test_a_conversation_is_one_episode_with_model_turns_and_masked_observations(tiny: HFPolicy) -> None:
    env = chain_env()
    problem = env.task.problem("train", 0)  # 3; *6 +3 *8  ->  168
    sampler = Scripted(tiny, solver)
    [episode] = run_conversations(sampler, env, [problem], SamplingParams(n=1, max_new_tokens=20), Limits(6, 100))
    assert [s.kind for s in episode.segments] == ["prompt"] + ["turn", "observation"] * 3 + ["turn"]
    assert [s.text for s in episode.segments[1:]] == ["<<calc 3*6>>", "=18\n", "<<calc 18+3>>", "=21\n", "<<calc 21*8>>",
                                                      "=168\n", "168"]
    assert episode.info["correct"] and episode.reward == 1.0 and episode.sum_turns
    assert (episode.info["turns"], episode.info["tool_calls"], episode.info["end"]) == (4, 3, "done")
    assert episode.info["messages"][1]["tool_calls"][0]["function"] == {"name": "calc", "arguments": {"expression": "3*6"}}
    assert episode.info["messages"][2] == tool_result("calc", "18")
    # token-in / token-out: each turn's tokens and log-probs are the sampler's, the observations are text
    for s in episode.segments:
        if s.kind == "turn":
            assert s.trainable and s.logprobs == [-(k + 1) / 10 for k in range(len(s.token_ids))]
        else:
            assert not s.trainable and s.logprobs is None
    batch = collate([episode], tiny.pad_id)
    kinds = [s.kind for s in episode.segments for _ in s.token_ids][1:]  # target-aligned
    assert batch.mask[0].tolist() == [float(k == "turn") for k in kinds]
    assert batch.kl_mask[0].tolist() == batch.mask[0].tolist() == batch.behaviour_mask[0].tolist()
    assert batch.turn_rewards.tolist() == [[0.0, 0.0, 0.0, 1.0]]
    assert batch.paid_rewards[0].sum().item() == 1.0  # paid once, at the last token of the last turn
    assert batch.paid_rewards[0, len(kinds) - 1].item() == 1.0


def test_every_live_conversation_advances_in_one_call_per_round(tiny: HFPolicy) -> None:
    env = chain_env()
    problems = [env.task.problem("train", i) for i in range(3)]
    sampler = Scripted(tiny, solver)
    episodes = run_conversations(sampler, env, problems, SamplingParams(n=2, max_new_tokens=20), Limits(6, 100))
    assert sampler.calls == [6, 6, 6, 6]  # 3 problems x 2 samples, four turns each, one call per turn
    assert [e.group for e in episodes] == [0, 0, 1, 1, 2, 2] and all(e.info["correct"] for e in episodes)


def test_limits_end_a_conversation_and_a_bad_call_is_an_observation(tiny: HFPolicy) -> None:
    env = chain_env()
    problem = env.task.problem("train", 0)
    looping = Scripted(tiny, lambda context: "<<calc 1+1>>")
    [e] = run_conversations(looping, env, [problem], SamplingParams(max_new_tokens=20), Limits(max_turns=3, max_tokens=500))
    assert (e.info["end"], e.info["turns"], e.info["correct"], e.reward) == ("turns", 3, False, 0.0)
    assert e.info["reason"] == "no final answer (the turns limit ended it)"
    [e] = run_conversations(looping, env, [problem], SamplingParams(max_new_tokens=20), Limits(max_turns=9, max_tokens=24))
    assert e.info["end"] == "tokens" and e.num_trainable == 24  # two calls of 12 tokens: nothing left
    [e] = run_conversations(looping, env, [problem], SamplingParams(max_new_tokens=20), Limits(max_turns=9, max_tokens=30))
    assert e.num_trainable == 30 and e.segments[-1].text == "<<calc"  # the last turn got the 6 tokens left
    broken = Scripted(tiny, lambda context: "<<calc 1+>>" if "error" not in context else "2")
    [e] = run_conversations(broken, env, [problem], SamplingParams(max_new_tokens=20), Limits(4, 100))
    assert e.segments[2].text.startswith("=error: not arithmetic") and e.info["tool_errors"] == 1
    assert e.info["end"] == "done"
    garbled = Scripted(tiny, lambda context: "oops>>" if context.count("error") < 2 else "1")
    [e] = run_conversations(garbled, env, [problem], SamplingParams(max_new_tokens=20), Limits(4, 100))
    assert e.info["tool_errors"] == 2 and "malformed call" in e.segments[2].text


def test_the_context_limit_ends_a_conversation(tiny: HFPolicy) -> None:
    tiny.model.config.max_position_embeddings, old = 60, tiny.model.config.max_position_embeddings
    try:
        env = chain_env()
        [e] = run_conversations(Scripted(tiny, lambda c: "<<calc 1+1>>"), env, [env.task.problem("train", 0)],
                                SamplingParams(max_new_tokens=20), Limits(9, 500))
    finally:
        tiny.model.config.max_position_embeddings = old
    assert e.info["end"] == "context" and len(e.token_ids) <= 60


class Graded(Environment):
    """Two turns: the first earns -0.25 (a cost), then an instruction; the second ends it."""

    def respond(self, conversation: Conversation, turn: Turn) -> Reply:
        if conversation.turns == 1:
            return Reply([user("\nagain:")], reward=-0.25)
        return Reply(done=True)


def test_turn_rewards_add_up_and_are_paid_where_each_turn_ends(tiny: HFPolicy) -> None:
    env = Graded(make_task("chain", {"num_steps": 3}))
    problem = env.task.problem("train", 0)
    sampler = Scripted(tiny, lambda c: "5" if "again" not in c else problem.answer)
    [e] = run_conversations(sampler, env, [problem], SamplingParams(max_new_tokens=10), Limits(4, 100))
    assert [s.kind for s in e.segments] == ["prompt", "turn", "observation", "turn"]
    assert e.segments[1].token_ids[-1] not in tiny.eos_ids  # the plain layout drops an end token mid-conversation
    assert e.segments[3].token_ids[-1] in tiny.eos_ids
    assert [s.reward for s in e.turns] == [-0.25, 1.0] and e.reward == 0.75
    e.reward = 0.5  # e.g. a length penalty: the last turn moves, the sum is the new value
    assert [s.reward for s in e.turns] == [-0.25, 0.75]
    batch = collate([e], tiny.pad_id)
    first_end = len(e.segments[0].token_ids) + len(e.segments[1].token_ids) - 2
    paid = batch.paid_rewards[0]
    assert paid[first_end].item() == -0.25 and paid[-1].item() == 0.75 and paid.sum().item() == pytest.approx(0.5)


def test_demonstrations_are_played_against_the_environment(tiny: HFPolicy) -> None:
    env = chain_env()
    problems = [env.task.problem("train", i) for i in range(2)]
    episodes = demonstration_episodes(tiny, env, problems)
    text = "".join(s.text for s in episodes[0].segments[1:])
    assert text == "<<calc 3*6>>=18\n<<calc 18+3>>=21\n<<calc 21*8>>=168\n168"
    assert all(e is not None and e.reward == 1.0 for e in episodes)
    assert [s.trainable for s in episodes[0].segments] == [False, True, False, True, False, True, False, True]
    # scripts are played with the honest tool (a lying calculator lies in rollouts only)
    lying = demonstration_episodes(tiny, chain_env(faults={"calc": 1.0}), problems)
    assert "".join(s.text for s in lying[0].segments[1:]) == text


class EndsEarly(Environment):
    """Ends every conversation after the first turn, whatever the script says."""


def test_a_script_the_environment_ends_early_gives_no_demonstration(tiny: HFPolicy) -> None:
    env = EndsEarly(make_task("chain", {"num_steps": 3}))
    env.demonstration = chain_env().demonstration  # type: ignore[method-assign]  (a three-call script)
    assert demonstration_episodes(tiny, env, [env.task.problem("train", 0)]) == [None]


def test_a_recorded_conversation_trains_every_assistant_turn(tiny: HFPolicy) -> None:
    messages = [user("7; +5 *3:\n"), {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "calc", "arguments": {"expression": "7+5"}}}]},
        tool_result("calc", "12"), {"role": "assistant", "content": "36"}]
    calc = make_env("tools", make_task("chain"), tools=["calc"]).tools[0].schema
    e = recorded_episode(tiny, messages, [calc])
    assert [(s.kind, s.text) for s in e.segments[1:]] == [("turn", "<<calc 7+5>>"), ("observation", "=12\n"), ("turn", "36")]
    assert e.info["messages"] == messages
    assert [s.trainable for s in e.segments] == [False, True, False, True]
    # without the tool's schema, one argument cannot be told from several: the JSON form
    assert recorded_episode(tiny, messages).segments[1].text == '<<calc {"expression":"7+5"}>>'
    with pytest.raises(ValueError, match="ending with one"):
        recorded_episode(tiny, messages[:3])


def test_real_sampling_through_an_environment_is_reproducible(tiny: HFPolicy) -> None:
    env = chain_env()
    problems = [env.task.problem("train", i) for i in range(2)]
    params = SamplingParams(n=2, max_new_tokens=12)
    first = run_conversations(tiny, env, problems, params, Limits(3, 30), generator=torch.Generator().manual_seed(3))
    again = run_conversations(tiny, env, problems, params, Limits(3, 30), generator=torch.Generator().manual_seed(3))
    assert [e.token_ids for e in first] == [e.token_ids for e in again]
    assert all(e.num_trainable <= 30 for e in first)
    assert [problems[e.group].id for e in first] == [p.id for p in problems for _ in range(2)]
    _ = Problem  # (the type the environment's conversations are about)


def test_a_problem_drawn_again_gets_fresh_random_streams(tiny: HFPolicy) -> None:
    env = chain_env(faults={"calc": 0.5})
    problem = env.task.problem("train", 0)
    sampler = Scripted(tiny, solver)

    def lies(**where: int) -> list[str]:
        episodes = run_conversations(sampler, env, [problem] * 2, SamplingParams(n=2, max_new_tokens=20), Limits(6, 100), **where)
        return [s.text for e in episodes for s in e.segments if s.kind == "observation"]

    first = lies(group_offset=0)
    assert lies(group_offset=0) == first  # the same draw replays the same (resume)
    assert lies(group_offset=7) != first and lies(sample_offset=100) != first


def test_the_context_limit_is_the_least_of_the_engines_and_the_models() -> None:
    from types import SimpleNamespace

    from selfimprove.policy.base import context_limit

    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=32768))
    assert context_limit(SimpleNamespace(model=model)) == 32768
    assert context_limit(SimpleNamespace(model=model, max_model_len=2048)) == 2048  # vLLM built shorter than the model
    assert context_limit(SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(n_ctx=1024)))) == 1024  # GPT-2's name
    text = SimpleNamespace(config=SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=4096)))
    assert context_limit(SimpleNamespace(model=text)) == 4096  # a multimodal config keeps it in text_config
    assert context_limit(SimpleNamespace()) is None and context_limit(SimpleNamespace(max_model_len=0)) is None
