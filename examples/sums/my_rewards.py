"""A reward function with TRL's signature, used unchanged by selfimprove (recipes/dataset-grpo.yaml).

TRL passes the batch's prompts and completions and every other dataset column as a list (here
`answer`); the function returns one float per completion.
"""


def final_number_reward(prompts, completions, answer, **kwargs):
    """1.0 when the last line is `#### <the answer>`, 0.1 for any `#### <number>`, else 0.0."""
    rewards = []
    for completion, gold in zip(completions, answer):
        last = completion.strip().splitlines()[-1] if completion.strip() else ""
        if last.replace(" ", "") == f"####{gold}":
            rewards.append(1.0)
        elif last.startswith("####") and last[4:].strip().isdigit():
            rewards.append(0.1)
        else:
            rewards.append(0.0)
    return rewards
