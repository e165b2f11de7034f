"""The case helpers as Pegasus renders them: the rules of the Inflector crate
(0.11.4), which Pegasus's helpers (handlebars_misc_helpers 0.13) call, so
that names built with them (output directories, run names) come out the same.

The rules, as Inflector applies them (quirks included, on purpose):
- Trailing characters that are not letters or digits are dropped first.
- snake, kebab, screaming snake: any run of non-alphanumeric characters is
  one separator (none at the start). A separator also goes before a
  character that is "upper case" (anything ASCII upper-casing leaves as it is,
  digits included) when it does not start a word and the character before or
  after it is lower case: `gpt-neox-20b` -> `gpt_neox_2_0b`, `Llama3` stays
  `llama3`, `MobileNetV2` -> `mobile_net_v2`. Before and after are looked up
  by the character's byte offset (in UTF-8) used as a character index, as the
  crate does, which shifts them after a non-ASCII character.
- camel, pascal, train, title, sentence: separators start a new word; a digit
  is copied and starts a new word; a letter starts a new word after one, or
  when it is upper case and the last letter kept in a word was lower case; a
  new word's first letter is upper-cased (sentence: only the first word's),
  other letters lower-cased (ASCII only): `Llama-3.1-8B` -> `Llama318B`.
- class case is pascal case with its last word made singular; table case is
  snake case with its last word made plural (`to_singular`, `to_plural`).
- `to_plural` / `to_singular`: a word in the uncountable list stays as it is,
  a few irregular words have their own form, else the last matching rule of
  the tables below (English rules in the Rails tradition) rewrites the end of
  the word; with no rule, plural adds `s` and singular keeps the word.
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple


def _keep(c: str) -> bool:
    return c.isalnum()


def _upper(c: str) -> str:
    return c.upper() if c.isascii() else c


def _lower(c: str) -> str:
    return c.lower() if c.isascii() else c


def _trimmed(text: str) -> str:
    end = len(text)
    while end and not _keep(text[end - 1]):
        end -= 1
    return text[:end]


def _snake_like(text: str, sep: str, upper: bool) -> str:
    chars = list(text)

    def at(i: int) -> str:  # a character index that is really a byte offset, as in the crate
        return chars[i] if 0 <= i < len(chars) else "A"

    case = _upper if upper else _lower
    out: List[str] = []
    first = True
    offset = 0
    for c in _trimmed(text):
        if not _keep(c):
            if not first:
                first = True
                out.append(sep)
        elif not first and c == _upper(c) and (at(offset + 1).islower() or at(offset - 1).islower()):
            out.append(sep + case(c))
        else:
            first = False
            out.append(case(c))
        offset += len(c.encode("utf-8"))
    return "".join(out)


def _camel_like(text: str, new_word: bool, first_word: bool, joiner: str = "", inverted: bool = False) -> str:
    out: List[str] = []
    last = " "
    found = False
    for c in _trimmed(text):
        if not _keep(c) and found:
            new_word = True
        elif not found and not _keep(c):
            continue
        elif c.isnumeric():
            found = new_word = True
            out.append(c)
        elif new_word or (last.islower() and c.isupper()):
            found, new_word = True, False
            if joiner and not first_word:
                out.append(joiner)
            out.append(_upper(c) if not inverted or first_word else _lower(c))
            first_word = False
        else:
            found = True
            last = c
            out.append(_lower(c))
    return "".join(out)


def snake(text: str) -> str:
    return _snake_like(text, "_", False)


def kebab(text: str) -> str:
    return _snake_like(text, "-", False)


def screaming_snake(text: str) -> str:
    return _snake_like(text, "_", True)


def camel(text: str) -> str:
    return _camel_like(text, new_word=False, first_word=False)


def pascal(text: str) -> str:
    return _camel_like(text, new_word=True, first_word=False)


def train(text: str) -> str:
    return _camel_like(text, new_word=True, first_word=True, joiner="-")


def title(text: str) -> str:
    return _camel_like(text, new_word=True, first_word=True, joiner=" ")


def sentence(text: str) -> str:
    return _camel_like(text, new_word=True, first_word=True, joiner=" ", inverted=True)


def class_case(text: str) -> str:
    pascalled = pascal(text)
    at = max((i for i, c in enumerate(pascalled) if c.isupper()), default=0)
    return pascalled[:at] + singular(pascalled[at:])


def table_case(text: str) -> str:
    snaked = snake(text)
    at = max(snaked.rfind("_"), 0)
    return snaked[:at] + plural(snaked[at:])


UNCOUNTABLE = frozenset("""
accommodation adulthood advertising advice aggression aid air aircraft alcohol anger applause arithmetic
assistance athletics bacon baggage beef biology blood botany bread butter carbon cardboard cash chalk chaos
chess crossroads countryside dancing deer dignity dirt dust economics education electricity engineering
enjoyment envy equipment ethics evidence evolution fame fiction flour flu food fuel fun furniture gallows
garbage garlic genetics gold golf gossip grammar gratitude grief guilt gymnastics happiness hardware harm hate
hatred health heat help homework honesty honey hospitality housework humour hunger hydrogen ice importance
inflation information innocence iron irony jam jewelry judo karate knowledge lack laughter lava leather
leisure lightning linguine linguini linguistics literature litter livestock logic loneliness luck luggage
macaroni machinery magic management mankind marble mathematics mayonnaise measles methane milk money mud
music mumps nature news nitrogen nonsense nurture nutrition obedience obesity oxygen pasta patience physics
poetry pollution poverty pride psychology publicity punctuation quartz racism relaxation reliability
research respect revenge rice rubbish rum safety scenery seafood seaside series shame sheep shopping sleep
smoke smoking snow soap software soil spaghetti species steam stuff stupidity sunshine symmetry tennis
thirst thunder timber traffic transportation trust underwear unemployment unity validity veal vegetation
vegetarianism vengeance violence vitality warmth wealth weather welfare wheat wildlife wisdom yoga zinc
zoology""".split())

_IRREGULAR = {"ox": "oxen", "man": "men", "woman": "women", "die": "dice", "yes": "yeses", "foot": "feet",
              "eave": "eaves", "goose": "geese", "tooth": "teeth", "quiz": "quizzes"}
_IRREGULAR_SINGULAR = {**{v: k for k, v in _IRREGULAR.items()}, "boxes": "box"}

# (pattern, ending): the last pattern that matches wins; the word becomes the
# pattern's first group followed by the ending.
_PLURAL: List[Tuple[str, str]] = [
    (r"(\w*)s$", "s"),
    (r"(\w*([^aeiou]ese))$", ""),
    (r"(\w*(ax|test))is$", "es"),
    (r"(\w*(alias|[^aou]us|tlas|gas|ris))$", "es"),
    (r"(\w*(e[mn]u))s?$", "s"),
    (r"(\w*([^l]ias|[aeiou]las|[emjzr]as|[iu]am))$", ""),
    (r"(\w*(alumn|syllab|octop|vir|radi|nucle|fung|cact|stimul|termin|bacill|foc|uter|loc|strat))(?:us|i)$", "i"),
    (r"(\w*(alumn|alg|vertebr))(?:a|ae)$", "ae"),
    (r"(\w*(seraph|cherub))(?:im)?$", "im"),
    (r"(\w*(her|at|gr))o$", "oes"),
    (r"(\w*(agend|addend|millenni|dat|extrem|bacteri|desiderat|strat|candelabr|errat|ov|symposi|curricul"
     r"|automat|quor))(?:a|um)$", "a"),
    (r"(\w*(apheli|hyperbat|periheli|asyndet|noumen|phenomen|criteri|organ|prolegomen|hedr|automat))(?:a|on)$",
     "a"),
    (r"(\w*)sis$", "ses"),
    (r"(\w*(kni|wi|li))fe$", "ves"),
    (r"(\w*(ar|l|ea|eo|oa|hoo))f$", "ves"),
    (r"(\w*([^aeiouy]|qu))y$", "ies"),
    (r"(\w*([^ch][ieo][ln]))ey$", "ies"),
    (r"(\w*(x|ch|ss|sh|zz)es)$", ""),
    (r"(\w*(x|ch|ss|sh|zz))$", "es"),
    (r"(\w*(matr|cod|mur|sil|vert|ind|append))(?:ix|ex)$", "ices"),
    (r"(\w*(m|l)(?:ice|ouse))$", "ice"),
    (r"(\w*(pe)(?:rson|ople))$", "ople"),
    (r"(\w*(child))(?:ren)?$", "ren"),
    (r"(\w*eaux)$", ""),
]
# likewise; `$2` in an ending is the pattern's second group
_SINGULAR: List[Tuple[str, str]] = [
    (r"(\w*)s$", ""),
    (r"(\w*)(ss)$", "$2"),
    (r"(n)ews$", "ews"),
    (r"(\w*)(o)es$", ""),
    (r"(\w*)([ti])a$", "um"),
    (r"((a)naly|(b)a|(d)iagno|(p)arenthe|(p)rogno|(s)ynop|(t)he)(sis|ses)$", "sis"),
    (r"(^analy)(sis|ses)$", "sis"),
    (r"(\w*)([^f])ves$", "fe"),
    (r"(\w*)(hive)s$", ""),
    (r"(\w*)(tive)s$", ""),
    (r"(\w*)([lr])ves$", "f"),
    (r"(\w*([^aeiouy]|qu))ies$", "y"),
    (r"(s)eries$", "eries"),
    (r"(m)ovies$", "ovie"),
    (r"(\w*)(x|ch|ss|sh)es$", "$2"),
    (r"(m|l)ice$", "ouse"),
    (r"(bus)(es)?$", ""),
    (r"(shoe)s$", ""),
    (r"(cris|test)(is|es)$", "is"),
    (r"^(a)x[ie]s$", "xis"),
    (r"(octop|vir)(us|i)$", "us"),
    (r"(alias|status)(es)?$", ""),
    (r"^(ox)en", ""),
    (r"(vert|ind)ices$", "ex"),
    (r"(matr)ices$", "ix"),
    (r"(quiz)zes$", ""),
    (r"(database)s$", ""),
]


def plural(word: str) -> str:
    return _inflect(word, _IRREGULAR, _PLURAL, word + "s")


def singular(word: str) -> str:
    return _inflect(word, _IRREGULAR_SINGULAR, _SINGULAR, word)


def _inflect(word: str, irregular: Dict[str, str], rules: List[Tuple[str, str]], otherwise: str) -> str:
    """The word unchanged when uncountable, its irregular form, the rewrite
    of the last rule in `rules` that matches (later rules win, as in
    Inflector), else `otherwise`. The patterns compile at their first use
    (re's cache), not in every run that imports this module."""
    if word in UNCOUNTABLE:
        return word
    if word in irregular:
        return irregular[word]
    for pattern, ending in reversed(rules):
        m = re.search(pattern, word)
        if m and m.group(1) is not None:
            return re.sub(r"\$(\d+)", lambda g: m.group(int(g.group(1))) or "", m.group(1) + ending)
    return otherwise
