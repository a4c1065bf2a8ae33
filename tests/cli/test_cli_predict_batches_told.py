"""``metaloop predict --help`` and docs/data.md said the queries are classified "in one
batch"; more than ``QUERY_CHUNK`` are scored in equal batches, each normalised by its own
BatchNorm statistics, and both now say so, with the number the code uses."""

import re
from pathlib import Path

from metaloop.cli.main import build_parser
from metaloop.recipes.predict import QUERY_CHUNK

DOCS = Path(__file__).resolve().parents[2] / "docs" / "data.md"


def _help() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "predict" in a.choices)
    return sub.choices["predict"].format_help()


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_help_and_docs_give_the_batch_size_of_predict():
    for text in (_flat(_help()), _flat(DOCS.read_text(encoding="utf-8"))):
        assert "classified in one batch" not in text
        assert "classified together in one batch" not in text
        assert f"up to {QUERY_CHUNK} in one batch" in text or \
            f"Up to {QUERY_CHUNK} queries are one batch" in text
        assert f"of at most {QUERY_CHUNK} (1500 queries: two of 750)" in text
