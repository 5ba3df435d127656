"""English sentences for the TTS corpus: a small deterministic grammar, or a user's text file.

The grammar mixes statements, questions, requests, numbers, times, names and places so that the
corpus covers varied prosody (falling statements, rising yes/no questions) and text normalisation
(digits, times, money). Sentences have 4 to 15 words, about 1.5 to 6 seconds when spoken.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

from frontend.errors import VoxsepError

MIN_WORDS = 4
MAX_WORDS = 15

NAMES = (
    "Alice", "Bernard", "Chloe", "Daniel", "Elena", "Farid", "Grace", "Hugo", "Ingrid", "James",
    "Keiko", "Liam", "Maria", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Samuel", "Tara",
    "Umar", "Vera", "Walter", "Xavier", "Yasmin", "Zoe", "Martin", "Helen", "Peter", "Laura",
    "Victor", "Sophie", "George", "Amelia", "Rajesh", "Fiona", "Tomas", "Olga", "Kevin", "Mei",
)
PEOPLE = (
    "the old teacher", "my neighbour", "the young doctor", "our captain", "the tired driver",
    "a quiet student", "the new manager", "her brother", "his grandmother", "the tall engineer",
    "the baker", "a local farmer", "the night nurse", "my cousin", "the music teacher",
    "the pilot", "your sister", "the mayor", "a friendly waiter", "the lead singer",
    "the small child", "the head chef", "an elderly man", "the librarian", "our landlord",
)
PLURAL_PEOPLE = (
    "the children", "my parents", "the students", "our neighbours", "the visitors", "the workers",
    "the players", "the tourists", "the twins", "the musicians", "the soldiers", "the nurses",
)
# (past tense, base form) of transitive verbs
VERBS = (
    ("found", "find"), ("painted", "paint"), ("carried", "carry"), ("opened", "open"),
    ("repaired", "repair"), ("cleaned", "clean"), ("sold", "sell"), ("bought", "buy"),
    ("borrowed", "borrow"), ("dropped", "drop"), ("washed", "wash"), ("moved", "move"),
    ("packed", "pack"), ("lost", "lose"), ("built", "build"), ("ordered", "order"),
    ("checked", "check"), ("hid", "hide"), ("brought", "bring"), ("described", "describe"),
    ("picked up", "pick up"), ("put away", "put away"), ("looked at", "look at"),
    ("wrapped", "wrap"), ("measured", "measure"), ("counted", "count"), ("fixed", "fix"),
)
ADJECTIVES = (
    "red", "heavy", "broken", "shiny", "old", "wooden", "tiny", "green", "strange", "expensive",
    "dusty", "blue", "empty", "warm", "silver", "yellow", "plastic", "round", "narrow", "bright",
)
NOUNS = (
    "box", "bicycle", "letter", "umbrella", "window", "chair", "lamp", "basket", "camera", "map",
    "kettle", "ladder", "piano", "blanket", "bottle", "clock", "jacket", "suitcase", "table", "key",
    "notebook", "mirror", "bucket", "radio", "garden gate", "picture", "envelope", "candle",
)
PLURAL_NOUNS = (
    "apples", "books", "tickets", "boxes", "letters", "chairs", "bottles", "candles", "maps",
    "oranges", "keys", "photographs", "stamps", "coins", "plates", "flowers", "shoes", "eggs",
)
PLACES = (
    "in the kitchen", "near the station", "behind the library", "at the market", "on the bridge",
    "under the stairs", "in the garden", "by the river", "at the harbour", "on the top shelf",
    "in the village", "outside the bakery", "at the airport", "in the old church", "on the beach",
    "in the garage", "next to the school", "at the corner shop", "in the attic", "by the fountain",
)
TIMES = (
    "yesterday", "this morning", "last night", "on Monday", "before lunch", "after dinner",
    "at dawn", "last summer", "on Friday evening", "early today", "in the afternoon",
    "two days ago", "last week", "on Sunday", "at midnight", "during the storm",
)
ADVERBS = (
    "slowly", "carefully", "quickly", "quietly", "again", "happily", "twice", "by accident",
    "without a word", "with great care", "in a hurry", "at last",
)
CITIES = (
    "London", "Boston", "Glasgow", "Cardiff", "Dublin", "Chicago", "Toronto", "Sydney", "Leeds",
    "Denver", "Bristol", "Seattle", "Oxford", "Austin", "York", "Portland",
)
WEATHER = ("raining", "snowing", "windy", "cold", "sunny", "foggy", "warm", "cloudy")
REQUESTS = ("Please", "Could you", "Would you kindly", "Remember to", "Try to", "Don't forget to")
FUTURE_TIMES = (
    "tomorrow", "tonight", "before lunch", "after dinner", "next week", "on Monday", "this evening",
    "by Friday", "in an hour", "before the guests arrive",
)
WH_WORDS = ("Where", "When", "Why", "How")
CONNECTORS = ("but", "so", "and then", "because", "while")
FEELINGS = ("happy", "surprised", "tired", "worried", "proud", "angry", "calm", "excited")


def _np(rng: random.Random) -> str:
    """A noun phrase: the object of a sentence."""
    kind = rng.random()
    if kind < 0.45:
        return f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    if kind < 0.65:
        return f"{rng.choice(('a', 'my', 'her', 'his', 'our', 'their'))} {rng.choice(NOUNS)}"
    if kind < 0.85:
        return f"{rng.randint(2, 99)} {rng.choice(PLURAL_NOUNS)}"
    return f"{rng.choice(('some', 'all the', 'three', 'a few'))} {rng.choice(ADJECTIVES)} {rng.choice(PLURAL_NOUNS)}"


def _subject(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.4:
        return rng.choice(NAMES)
    if r < 0.8:
        return rng.choice(PEOPLE)
    return rng.choice(PLURAL_PEOPLE)


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _clause(rng: random.Random) -> str:
    verb = rng.choice(VERBS)[0]
    parts = [_subject(rng), verb, _np(rng)]
    if rng.random() < 0.6:
        parts.append(rng.choice(PLACES))
    if rng.random() < 0.5:
        parts.append(rng.choice(TIMES))
    if rng.random() < 0.25:
        parts.append(rng.choice(ADVERBS))
    return " ".join(parts)


def _time_of_day(rng: random.Random) -> str:
    hour, minute = rng.randint(1, 12), rng.choice((0, 5, 10, 15, 20, 30, 40, 45, 50))
    if minute == 0:
        return f"{hour} o'clock" if rng.random() < 0.5 else f"{hour} {rng.choice(('a.m.', 'p.m.'))}"
    return f"{hour}:{minute:02d}"


def _sentence(rng: random.Random) -> str:
    """One sentence from a randomly chosen template."""
    t = rng.randrange(14)
    if t <= 3:
        return _cap(_clause(rng)) + "."
    if t == 4:
        return f"{_cap(_clause(rng))}, {rng.choice(CONNECTORS)} {_clause(rng)}."
    if t == 5:
        aux = "Did"
        verb = rng.choice(VERBS)[1]
        tail = f" {rng.choice(PLACES)}" if rng.random() < 0.5 else f" {rng.choice(TIMES)}"
        return f"{aux} {_subject(rng)} {verb} {_np(rng)}{tail}?"
    if t == 6:
        verb = rng.choice(VERBS)[1]
        return f"{rng.choice(WH_WORDS)} did {_subject(rng)} {verb} {_np(rng)}?"
    if t == 7:
        request = rng.choice(REQUESTS)
        end = "?" if request.endswith("you") or request.endswith("kindly") else "."
        return f"{request} {rng.choice(VERBS)[1]} {_np(rng)} {rng.choice(FUTURE_TIMES + PLACES)}{end}"
    if t == 8:
        return (f"The {rng.choice(('train', 'bus', 'ferry', 'flight', 'coach'))} to {rng.choice(CITIES)} "
                f"leaves at {_time_of_day(rng)}{rng.choice(('', ' from platform ' + str(rng.randint(1, 12))))}.")
    if t == 9:
        return (f"{rng.choice(NAMES)} paid {rng.randint(2, 950)} {rng.choice(('dollars', 'pounds', 'euros'))} "
                f"for {_np(rng)}.")
    if t == 10:
        return (f"It was {rng.choice(WEATHER)} in {rng.choice(CITIES)} {rng.choice(TIMES)}, "
                f"so {_subject(rng)} stayed {rng.choice(('inside', 'at home', 'in bed', 'at work'))}.")
    if t == 11:
        return f"How many {rng.choice(PLURAL_NOUNS)} did {rng.choice(NAMES)} {rng.choice(VERBS)[1]} {rng.choice(TIMES)}?"
    if t == 12:
        return (f"{_cap(_subject(rng))} {rng.choice(('felt', 'looked', 'seemed', 'was'))} "
                f"{rng.choice(('very ', 'quite ', 'rather ', ''))}{rng.choice(FEELINGS)} "
                f"{rng.choice(('after the meeting', 'when the phone rang', 'about the news', 'all day'))}.")
    return (f"Room {rng.randint(1, 499)} is on the {rng.choice(('first', 'second', 'third', 'fourth', 'fifth'))} "
            f"floor, {rng.choice(('next to', 'opposite', 'behind', 'near'))} the "
            f"{rng.choice(('lift', 'stairs', 'kitchen', 'office', 'exit'))}.")


def generate_sentences(n: int = 4000, seed: int = 0) -> list[str]:
    """``n`` unique sentences of 4-15 words, deterministic for ``seed``.

    Raises:
        ValueError: the grammar cannot produce ``n`` unique sentences in a reasonable time.
    """
    rng = random.Random(f"voxsep-sentences-{seed}")
    seen: dict[str, None] = {}
    tries = 0
    while len(seen) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"grammar produced only {len(seen)} unique sentences, asked for {n}")
        s = _sentence(rng)
        if MIN_WORDS <= len(s.split()) <= MAX_WORDS:
            seen.setdefault(s, None)
    return list(seen)


def load_sentences(path: str | os.PathLike) -> list[str]:
    """Unique non-blank lines of a UTF-8 text file, in file order.

    Raises:
        VoxsepError: missing, unreadable, binary, not UTF-8, or without any sentence.
    """
    p = Path(path)
    if not p.is_file():
        raise VoxsepError(f"{p}: no such sentences file")
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise VoxsepError(f"{p}: cannot read sentences file ({err.strerror})") from None
    if b"\x00" in raw:
        raise VoxsepError(f"{p}: binary file, expected UTF-8 text with one sentence a line")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise VoxsepError(f"{p}: not UTF-8 text (invalid byte at offset {err.start})") from None
    lines = dict.fromkeys(" ".join(line.split()) for line in text.splitlines())
    lines.pop("", None)
    if not lines:
        raise VoxsepError(f"{p}: contains no sentences (expected one a line)")
    bad = next((s for s in lines if not any(c.isalnum() for c in s)), None)
    if bad is not None:
        raise VoxsepError(f"{p}: line {bad!r} has no words to speak")
    return list(lines)
