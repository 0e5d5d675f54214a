"""How a conversation becomes tokens for an engine, and how a model's turn becomes a message.

Two layouts, picked by the engine's `chat` flag (`dialogue_for`):

- `ChatDialogue` (chat models): the tokenizer's chat template renders the first messages with the
  tools' schemas (`apply_chat_template(tools=...)`); calls are read with the tokenizer's
  `response_template` when it has one (`parse_response`), else in the Hermes / Qwen form
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` that most open chat templates write. An
  observation's tokens are what the template adds after an assistant turn: the rendering of
  `[user, assistant, *observation]` (with the generation prompt) minus that of `[user, assistant]`,
  after the end of the model's own turn (its end token, when it sampled one, is not repeated).
- `PlainDialogue` (prompts as plain text, the built-in tiny model): the short call format
  `<<name arguments>>` (the turn stops at `>>`); `arguments` is the text of a one-argument tool's only
  argument (`<<calc 12*7>>`) or a JSON object (`<<convert {"amount": 3, "to": "EUR"}>>`). A tool's
  result follows as `=` + result + newline (`<<calc 12*7>>=84`), any other message as its text. A turn
  that ended with the end token and is followed by more conversation drops that token.

The model's sampled tokens are never re-tokenised: an episode holds them as sampled, and only
observations (and demonstrations, for SFT) are tokenised from text.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Mapping, Protocol, Sequence

from selfimprove.chat import Message, assistant, calls_of, tool_call

logger = logging.getLogger(__name__)

SHORT_STOP = ">>"
_SHORT_CALL = re.compile(r"<<([A-Za-z_][\w.\-]*)(?:[ \t]+(.*?))?[ \t]*>>", re.S)
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_SENTINEL = "\x1fSELFIMPROVE\x1f"

Schemas = Sequence[Mapping[str, Any]]


class Dialogue(Protocol):
    def stop(self, tools: Schemas) -> tuple[str, ...]:
        """Stop strings that end a turn for a tool call."""
        ...

    def start(self, messages: Sequence[Message], tools: Schemas) -> list[int]:
        """Token ids of the first messages, ending where the model writes."""
        ...

    def parse(self, token_ids: Sequence[int], tools: Schemas) -> tuple[Message, str | None]:
        """A sampled turn as an assistant message (content, tool calls), and what is wrong with a call it
        tried to write (None when nothing is)."""
        ...

    def kept(self, token_ids: Sequence[int], continues: bool) -> int:
        """How many of a turn's sampled tokens stay in the conversation."""
        ...

    def observation(self, messages: Sequence[Message], last_token: int | None) -> tuple[list[int], str]:
        """Tokens (and text) of messages that follow a model turn whose last token was `last_token` (None
        when it was cut by a limit), up to where the model writes next."""
        ...

    def demonstration_turn(self, message: Message, tools: Schemas, final: bool) -> tuple[list[int], str]:
        """Tokens (and text) the model would sample for a demonstration's assistant message."""
        ...


def _schema_of(tools: Schemas, name: str) -> Mapping[str, Any] | None:
    for t in tools:
        fn = t.get("function", t)
        if fn.get("name") == name:
            return fn
    return None


def _arguments(value: Any) -> tuple[dict[str, Any] | None, str | None]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, "the arguments are not JSON"
    if value is None:
        return {}, None
    if not isinstance(value, Mapping):
        return None, "the arguments must be a JSON object"
    return dict(value), None


class PlainDialogue:
    """Plain text with the short call format (see the module docstring)."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def stop(self, tools: Schemas) -> tuple[str, ...]:
        return (SHORT_STOP,) if tools else ()

    def start(self, messages: Sequence[Message], tools: Schemas) -> list[int]:
        return list(self.sampler.encode_prompt("".join(str(m.get("content", "")) for m in messages)))

    def _text(self, token_ids: Sequence[int]) -> str:
        ids = list(token_ids)
        if ids and ids[-1] in self.sampler.eos_ids:
            ids = ids[:-1]
        return self.sampler.detokenize(ids)

    def parse(self, token_ids: Sequence[int], tools: Schemas) -> tuple[Message, str | None]:
        """Generation stops at the first `>>` (the stop string), so a turn that holds one tried to call; what
        follows `>>` in the text is the rest of the token that wrote it (`>>=` in a BPE vocabulary)."""
        text = self._text(token_ids)
        end = text.find(SHORT_STOP) if tools else -1
        if end < 0:
            return assistant(text), None
        start = text.rfind("<<", 0, end)
        match = _SHORT_CALL.fullmatch(text, start, end + len(SHORT_STOP)) if start >= 0 else None
        if match is None:
            return assistant(text), "malformed call (write <<tool arguments>>)"
        name, raw = match[1], (match[2] or "").strip()
        content = text[:start]
        schema = _schema_of(tools, name)
        params = list((schema or {}).get("parameters", {}).get("properties", {}))
        if raw.startswith("{") or (schema is not None and len(params) != 1):
            arguments, error = _arguments(raw or "{}")
            if error:
                return assistant(content, [tool_call(name, {})]), f"{error} (write <<{name} {{\"argument\": value}}>>)"
        else:
            arguments = {params[0]: raw} if params else ({"input": raw} if raw else {})
        return assistant(content, [tool_call(name, arguments or {})]), None

    def kept(self, token_ids: Sequence[int], continues: bool) -> int:
        n = len(token_ids)
        return n - 1 if continues and n and token_ids[-1] in self.sampler.eos_ids else n

    def observation(self, messages: Sequence[Message], last_token: int | None) -> tuple[list[int], str]:
        text = "".join(f"={m.get('content', '')}\n" if m.get("role") == "tool" else str(m.get("content", ""))
                       for m in messages)
        return list(self.sampler.encode_completion(text, add_eos=False)), text

    def demonstration_turn(self, message: Message, tools: Schemas, final: bool) -> tuple[list[int], str]:
        text = str(message.get("content", ""))
        for name, arguments in calls_of(message):
            schema = _schema_of(tools, name)
            params = list((schema or {}).get("parameters", {}).get("properties", {}))
            only = arguments.get(params[0]) if len(params) == 1 and set(arguments) <= {params[0]} else None
            if isinstance(only, (str, int, float)) and not str(only).startswith("{"):
                text += f"<<{name} {only}>>"
            else:
                text += f"<<{name} {json.dumps(arguments, separators=(',', ':'), ensure_ascii=False)}>>"
        return list(self.sampler.encode_completion(text, add_eos=final)), text


class ChatDialogue:
    """The tokenizer's chat template (see the module docstring)."""

    def __init__(self, tokenizer: Any, eos_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = list(eos_ids)
        base = [{"role": "user", "content": "x"}]
        with_turn = self._render(base + [{"role": "assistant", "content": _SENTINEL}], (), False)
        cut = with_turn.find(_SENTINEL)
        self.turn_end = with_turn[cut + len(_SENTINEL):] if cut >= 0 else ""  # what closes an assistant turn
        # The end token a turn ends with: the one the template's turn end starts with (Llama 3's <|eot_id|>,
        # Qwen's <|im_end|>), else the first end token.
        texts = {i: tokenizer.decode([i], skip_special_tokens=False) for i in self.eos_ids}
        starting = [i for i in self.eos_ids if texts[i] and self.turn_end.startswith(texts[i])]
        self.turn_eos = max(starting, key=lambda i: len(texts[i])) if starting else self.eos_ids[0]
        self._eos_text = texts
        head = self._render(base, (), False)
        self.generation_prompt = self._render(base, (), True)[len(head):]
        self.response_template = getattr(tokenizer, "response_template", None)
        if self.response_template is not None:
            try:
                tokenizer.parse_response("", prefix=self.generation_prompt)
            except Exception as err:  # the template itself is broken: every turn would be a "mistake"
                logger.warning("the tokenizer's response_template cannot parse (%s); reading calls in the Hermes form", err)
                self.response_template = None

    def _render(self, messages: Sequence[Message], tools: Schemas, generation: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(list(messages), tools=list(tools) or None,
                                                      add_generation_prompt=generation, tokenize=False)
        except Exception as err:  # jinja's TemplateError and the template's own raise_exception
            raise ValueError(f"the chat template cannot render this conversation: {err}") from None

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def stop(self, tools: Schemas) -> tuple[str, ...]:
        return ()

    def start(self, messages: Sequence[Message], tools: Schemas) -> list[int]:
        return self._ids(self._render(messages, tools, True))

    def parse(self, token_ids: Sequence[int], tools: Schemas) -> tuple[Message, str | None]:
        ids = list(token_ids)
        if ids and ids[-1] in self.eos_ids:
            ids = ids[:-1]
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        if self.response_template is not None:
            try:
                parsed = self.tokenizer.parse_response(text, prefix=self.generation_prompt, tools=list(tools) or None)
                calls = [tool_call(n, a) for n, a in calls_of(parsed)]
                return assistant(str(parsed.get("content") or ""), calls), None
            except Exception as err:  # a call the parser cannot read is the model's mistake
                return assistant(text), f"malformed call ({err})"
        return hermes_parse(text)

    def kept(self, token_ids: Sequence[int], continues: bool) -> int:
        return len(token_ids)

    def observation(self, messages: Sequence[Message], last_token: int | None) -> tuple[list[int], str]:
        """What the template writes after an assistant turn: the end of that turn, the messages and the next
        turn's opening, read after the turn's content in `[user, assistant, *messages]` (so a template that
        writes the last assistant turn differently, like Qwen3's, still works); the end token the model
        sampled is not written twice."""
        full = self._render([{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}, *messages], (), True)
        cut = full.find(_SENTINEL)
        if cut < 0:
            raise ValueError("the chat template does not write an assistant turn's content; a multi-turn rollout needs it")
        text = full[cut + len(_SENTINEL):]
        sampled = self._eos_text.get(last_token, "") if last_token is not None else ""
        if sampled and text.startswith(sampled):
            text = text[len(sampled):]
        return self._ids(text), text

    def demonstration_turn(self, message: Message, tools: Schemas, final: bool) -> tuple[list[int], str]:
        """The turn as the template writes it, ending with the turn's end token; where the template does not
        write calls in a form `parse` reads back (or at all), the calls in the Hermes form it does read."""
        base = [{"role": "user", "content": "x"}]
        head = self._render(base, tools, True)
        whole = self._render(base + [dict(message)], tools, False)
        text = whole[len(head):] if whole.startswith(head) else str(message.get("content", ""))
        if self.turn_end and text.endswith(self.turn_end):
            text = text[: -len(self.turn_end)]
        if not self._reads_back(text, message, tools):
            text = str(message.get("content", "")) + "".join(
                "<tool_call>" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "</tool_call>"
                for name, arguments in calls_of(message))
            if not self._reads_back(text, message, tools):
                raise ValueError("this tokenizer's response_template does not read the calls its chat template writes, "
                                 "nor the Hermes <tool_call> form: worked conversations cannot be written for it")
        return self._ids(text) + [self.turn_eos], text

    def _reads_back(self, text: str, message: Message, tools: Schemas) -> bool:
        parsed, error = self.parse(self._ids(text) + [self.turn_eos], tools)
        return error is None and calls_of(parsed) == calls_of(message)


def hermes_parse(text: str) -> tuple[Message, str | None]:
    """`<tool_call>{json}</tool_call>` blocks (Hermes, Qwen 2.5/3, SmolLM3 templates) as tool calls."""
    calls = []
    for block in _HERMES.findall(text):
        try:
            value = json.loads(block)
        except json.JSONDecodeError:
            return assistant(text), "malformed call (the <tool_call> block is not JSON)"
        if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
            return assistant(text), "malformed call (a <tool_call> needs a name)"
        arguments, error = _arguments(value.get("arguments", value.get("parameters")))
        if error:
            return assistant(text), f"malformed call ({error})"
        calls.append(tool_call(value["name"], arguments or {}))
    if "<tool_call>" in text and not calls:
        return assistant(text), "malformed call (an unclosed <tool_call>)"
    return assistant(_HERMES.sub("", text).strip() if calls else text, calls), None


def dialogue_for(sampler: Any) -> Dialogue:
    """The layout of an engine: its chat template when it wraps prompts in one, else plain text. A chat
    layout renders its template to find its markers, so it is made once per tokenizer, template and end
    tokens, and kept on the engine itself: it lives and dies with the engine (a module-level cache keyed
    weakly by the tokenizer could never drop an entry, since the layout holds the tokenizer)."""
    tokenizer = getattr(sampler, "tokenizer", None)
    if getattr(sampler, "chat", False) and tokenizer is not None:
        made: dict[tuple[Any, ...], ChatDialogue] = (
            vars(sampler).setdefault("_chat_layouts", {}) if hasattr(sampler, "__dict__") else {})
        response = json.dumps(getattr(tokenizer, "response_template", None), sort_keys=True, default=str)
        # the tokenizer's id: unique while its layout, which holds it, is kept
        key = (id(tokenizer), tuple(sampler.eos_ids), str(tokenizer.chat_template), response)
        if key not in made:
            made[key] = ChatDialogue(tokenizer, sampler.eos_ids)
        return made[key]
    return PlainDialogue(sampler)
