"""The function-calling generator's tool library: twelve tools with query templates, and the prompts
that show tools to a model (compact for the character-level model, or APIGen's JSON schemas)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence


@dataclass(frozen=True)
class Tool:
    """One tool of the generator's library: its schema and how to draw a request for it."""

    name: str
    description: str
    params: tuple[tuple[str, str, str], ...]  # (argument, type, description)
    draw: Callable[[random.Random], tuple[str, dict[str, Any]]]  # rng -> (query, arguments)

    def schema(self) -> dict[str, Any]:
        """The tool in APIGen's schema format."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": {arg: {"type": kind, "description": text} for arg, kind, text in self.params},
        }

    def signature(self) -> str:
        """The compact form: `name(arg,arg)`."""
        return f"{self.name}({','.join(arg for arg, _, _ in self.params)})"


CITIES = ("Paris", "Rome", "Tokyo", "Berlin", "Madrid", "Oslo", "Cairo", "Lima", "Delhi", "Boston",
          "Dublin", "Vienna", "Prague", "Seoul", "Sydney", "Denver", "Austin", "Lagos", "Quito", "Hanoi",
          "Lisbon", "Zurich", "Miami", "Nairobi")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "CNY", "INR", "SEK")
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META", "IBM", "INTC", "ORCL", "AMD", "NFLX",
           "ADBE", "CSCO", "PEP", "KO", "NKE", "DIS", "SAP", "UBER")
PHRASES = ("hello", "thank you", "good night", "see you soon", "how are you", "good morning", "yes please",
           "where is the station", "I am hungry", "happy birthday")
LANGUAGES = ("french", "german", "spanish", "italian", "dutch", "japanese", "korean", "polish")
PEOPLE = ("ann", "bob", "carl", "dana", "eve", "finn", "gina", "hugo", "ivy", "jack", "kim", "leo")
SUBJECTS = ("lunch", "meeting", "report", "invoice", "party", "trip", "budget", "review", "holiday",
            "contract", "launch", "dinner")
ARTISTS = ("Adele", "Queen", "Drake", "Muse", "Abba", "Coldplay", "Bjork", "Eminem", "Shakira", "Oasis",
           "Blur", "Sade", "Prince", "Madonna", "Rihanna", "Metallica")


def _pick(rng: random.Random, templates: Sequence[str], **values: Any) -> str:
    return rng.choice(templates).format(**values)


def _weather(rng: random.Random) -> tuple[str, dict[str, Any]]:
    city, unit = rng.choice(CITIES), rng.choice(("celsius", "fahrenheit"))
    q = _pick(rng, ("weather in {c} in {u}", "{c} weather in {u}", "how warm is {c} in {u}?"), c=city, u=unit)
    return q, {"city": city, "unit": unit}


def _add(rng: random.Random) -> tuple[str, dict[str, Any]]:
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    return _pick(rng, ("add {a} and {b}", "{a} plus {b}", "sum of {a} and {b}"), a=a, b=b), {"a": a, "b": b}


def _multiply(rng: random.Random) -> tuple[str, dict[str, Any]]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    q = _pick(rng, ("multiply {a} by {b}", "{a} times {b}", "product of {a} and {b}"), a=a, b=b)
    return q, {"a": a, "b": b}


def _convert(rng: random.Random) -> tuple[str, dict[str, Any]]:
    amount = rng.randint(1, 1000)
    src, dst = rng.sample(CURRENCIES, 2)
    templates = ("convert {n} {s} to {d}", "{n} {s} in {d}", "how much is {n} {s} in {d}?")
    q = _pick(rng, templates, n=amount, s=src, d=dst)
    return q, {"amount": amount, "from": src, "to": dst}


def _alarm(rng: random.Random) -> tuple[str, dict[str, Any]]:
    hour, minute = rng.randint(0, 23), rng.randint(0, 59)
    templates = ("set an alarm for {h}:{m:02d}", "wake me at {h}:{m:02d}", "alarm at {h}:{m:02d}")
    q = _pick(rng, templates, h=hour, m=minute)
    return q, {"hour": hour, "minute": minute}


def _timer(rng: random.Random) -> tuple[str, dict[str, Any]]:
    minutes = rng.randint(1, 120)
    q = _pick(rng, ("timer for {n} minutes", "set a {n} minute timer", "remind me in {n} minutes"), n=minutes)
    return q, {"minutes": minutes}


def _flights(rng: random.Random) -> tuple[str, dict[str, Any]]:
    origin, destination = rng.sample(CITIES, 2)
    date = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    q = _pick(rng, ("flights from {o} to {d} on {t}", "fly {o} to {d} on {t}"), o=origin, d=destination, t=date)
    return q, {"origin": origin, "destination": destination, "date": date}


def _email(rng: random.Random) -> tuple[str, dict[str, Any]]:
    to, subject = f"{rng.choice(PEOPLE)}@example.com", rng.choice(SUBJECTS)
    q = _pick(rng, ("email {t} about {s}", "send {t} a mail about {s}", "write to {t} re {s}"), t=to, s=subject)
    return q, {"to": to, "subject": subject}


def _stock(rng: random.Random) -> tuple[str, dict[str, Any]]:
    symbol = rng.choice(SYMBOLS)
    return _pick(rng, ("price of {s}", "{s} stock price", "quote {s}"), s=symbol), {"symbol": symbol}


def _translate(rng: random.Random) -> tuple[str, dict[str, Any]]:
    text, lang = rng.choice(PHRASES), rng.choice(LANGUAGES)
    q = _pick(rng, ("translate '{t}' to {l}", "say '{t}' in {l}", "'{t}' in {l}"), t=text, l=lang)
    return q, {"text": text, "target_lang": lang}


def _time(rng: random.Random) -> tuple[str, dict[str, Any]]:
    city = rng.choice(CITIES)
    return _pick(rng, ("time in {c}", "what time is it in {c}?", "current time in {c}"), c=city), {"city": city}


def _music(rng: random.Random) -> tuple[str, dict[str, Any]]:
    artist = rng.choice(ARTISTS)
    return _pick(rng, ("play {a}", "play songs by {a}", "put on some {a}"), a=artist), {"artist": artist}


TOOL_LIBRARY: tuple[Tool, ...] = (
    Tool("get_weather", "Current weather in a city.",
         (("city", "str", "City name."), ("unit", "str", "celsius or fahrenheit.")), _weather),
    Tool("add", "Add two integers.", (("a", "int", "First number."), ("b", "int", "Second number.")), _add),
    Tool("multiply", "Multiply two integers.",
         (("a", "int", "First number."), ("b", "int", "Second number.")), _multiply),
    Tool("convert_currency", "Convert an amount between currencies.",
         (("amount", "int", "Amount to convert."), ("from", "str", "Currency code to convert from."),
          ("to", "str", "Currency code to convert to.")), _convert),
    Tool("set_alarm", "Set an alarm.",
         (("hour", "int", "Hour, 0-23."), ("minute", "int", "Minute, 0-59.")), _alarm),
    Tool("set_timer", "Start a countdown timer.", (("minutes", "int", "Length in minutes."),), _timer),
    Tool("search_flights", "Search flights between two cities on a date.",
         (("origin", "str", "Departure city."), ("destination", "str", "Arrival city."),
          ("date", "str", "Date, YYYY-MM-DD.")), _flights),
    Tool("send_email", "Send an email.",
         (("to", "str", "Recipient address."), ("subject", "str", "Subject line.")), _email),
    Tool("get_stock_price", "Latest price of a stock.", (("symbol", "str", "Ticker symbol."),), _stock),
    Tool("translate", "Translate text into a language.",
         (("text", "str", "Text to translate."), ("target_lang", "str", "Target language.")), _translate),
    Tool("get_time", "Current local time in a city.", (("city", "str", "City name."),), _time),
    Tool("play_music", "Play music by an artist.", (("artist", "str", "Artist name."),), _music),
)
TOOLS_BY_NAME: Mapping[str, Tool] = {tool.name: tool for tool in TOOL_LIBRARY}
assert len(TOOLS_BY_NAME) == len(TOOL_LIBRARY) == 12  # `num_tools` is bounded by this


def compact_prompt(tools: Sequence[Tool], query: str) -> str:
    """The short prompt for the character-level model: a tools line, then the query."""
    return f"tools: {' '.join(tool.signature() for tool in tools)}\nq: {query}\n"


def full_prompt(schemas: Sequence[Mapping[str, Any]], query: str) -> str:
    """The full prompt: the tools' JSON schemas, the query, and the expected answer shape."""
    return (
        f"tools: {json.dumps(list(schemas), ensure_ascii=False)}\n"
        f"query: {query}\n"
        'Answer with a JSON list of calls: [{"name": ..., "arguments": {...}}]\n'
    )


