"""The case helpers against real outputs of Pegasus's (Inflector 0.11.4's):
every row of tests/data/case-helpers.tsv, rendered through templates."""

from __future__ import annotations

import csv
import os

import pytest

from pegpar import cases, template
from pegpar.spec import Source

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "case-helpers.tsv")


def _rows():
    with open(DATA, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows[0]
    return [(helper, row[0], want) for row in rows[1:] for helper, want in zip(header[1:], row[1:])]


ROWS = _rows()


def test_the_table_has_every_case_helper():
    assert len(ROWS) >= 8 * 100
    assert {helper for helper, _, _ in ROWS} == {
        "to_camel_case", "to_pascal_case", "to_snake_case", "to_screaming_snake_case", "to_kebab_case",
        "to_train_case", "to_title_case", "to_sentence_case"}


@pytest.mark.parametrize("helper, text, want", ROWS, ids=[f"{h}:{t}" for h, t, _ in ROWS])
def test_each_row_renders_as_pegasus_renders_it(helper, text, want):
    assert template.render("{{" + helper + " x}}", {"x": text}, Source("q.yaml", 1)) == want


@pytest.mark.parametrize("word, plural", [
    ("box", "boxes"), ("geometry", "geometries"), ("axis", "axes"), ("knife", "knives"), ("agendum", "agenda"),
    ("elf", "elves"), ("zoology", "zoology"), ("test", "tests"), ("ox", "oxen"), ("child", "children"),
    ("person", "personople"), ("matrix", "matrices"), ("checkpoint", "checkpoints"), ("run", "runs"),
])
def test_plural(word, plural):
    """As the crate has it: `person` included (its rule keeps the whole word)."""
    assert cases.plural(word) == plural


def test_singular_as_the_crate_has_it():
    """Its rules, quirks included: -ves loses the letter before it, and a few
    plurals it has no rule for stay as they are."""
    words = ("replies", "glasses", "witches", "dishes", "access", "bacon", "movies", "analyses", "statuses",
             "vertices", "oxen", "checkpoints", "matrices", "knives", "elves", "wives", "children", "agenda")
    assert [cases.singular(w) for w in words] == [
        "reply", "glass", "witch", "dish", "access", "bacon", "movie", "analysis", "status", "vertex", "ox",
        "checkpoint", "matrix", "knfe", "ef", "wfe", "children", "agenda"]


def test_class_and_table_case_make_the_last_word_singular_or_plural():
    assert (cases.class_case("user_accounts"), cases.class_case("TrainingRuns")) == ("UserAccount", "TrainingRun")
    assert (cases.table_case("UserAccount"), cases.table_case("batch")) == ("user_accounts", "batches")
