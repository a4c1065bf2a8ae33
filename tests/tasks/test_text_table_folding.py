"""How a text table compares texts and labels (``folded``) and tells a text with nothing
visible (``visible``): the ASCII shortcut gives the general path's results, and the
zero-width joiner and non-joiner, which change a word, are kept."""

from __future__ import annotations

import random
import re

import pytest

from metaloop.tasks import TextTable
from metaloop.tasks.text_table import folded, read_text_table, visible

PERSIAN = "\u0645\u06cc\u200c\u0634\u0648\u062f"           # mi-shavad, with its ZWNJ
PERSIAN_RUN_ON = "\u0645\u06cc\u0634\u0648\u062f"         # the same letters, joined up
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"     # one emoji: a family
PEOPLE = "\U0001f468\U0001f469\U0001f467"                 # three emoji: man, woman, girl


class _General(str):
    """A text that says it is not ASCII, so ``folded`` and ``visible`` take their general
    path for it whatever it holds."""

    def isascii(self) -> bool:
        return False


def _mix() -> list[str]:
    rng = random.Random(0)
    ascii_chars = [chr(c) for c in range(128)]
    words = ["Great", "MOVIE", "sports", "x", "", " ", "\t\n", "\x1c\x1f", "\x0b\x0c",
             "\x00", "\x07\x1b", "\x7f", "!", "~", "a b", "  Padded  "]
    other = ["caf\u00e9", "cafe\u0301", "\u0627\u200f", "\u200b\u200b", "\u202e\u202d",
             "\u0301", "\ufeff \u2060", "\u200b\u3000\u00a0", "\u00df", "\uff26\uff55\uff4c\uff4c",
             "\u2163", "soft\u00adhyphen", "\u200c\u200d", PERSIAN, PERSIAN_RUN_ON, FAMILY,
             PEOPLE, "\u2764\ufe0f", "\u0130stanbul", "\u03a3\u03a3", "\u1e9e", "\u2028\u2029",
             "\x85", "\u00a0", "\ufb01"]
    texts = ascii_chars + words + other
    texts += ["".join(rng.choice(ascii_chars) for _ in range(rng.randrange(12)))
              for _ in range(400)]
    texts += ["".join(rng.choice(words + other) for _ in range(rng.randrange(1, 5)))
              for _ in range(400)]
    return texts


def test_ascii_and_other_texts_fold_and_show_as_the_general_path_says():
    texts = _mix()
    assert sum(t.isascii() for t in texts) > 500 and sum(not t.isascii() for t in texts) > 300
    for t in texts:
        assert folded(t) == folded(_General(t)), repr(t)
        assert visible(t) == visible(_General(t)), repr(t)
    assert [visible(chr(c)) for c in range(128)] == [0x20 < c < 0x7f for c in range(128)]
    assert folded(" \tGREAT\x1c  Movie\x0b!\x07 ") == "great movie !\x07"


def test_zero_width_joiners_are_kept_and_other_format_characters_dropped():
    assert folded(PERSIAN) == PERSIAN != folded(PERSIAN_RUN_ON)
    assert folded(FAMILY) == FAMILY != folded(PEOPLE)
    zero_width = "\u0645\u06cc\u200b\u0634\u0648\u062f"
    for dropped in ("\u200b", "\u200e", "\u202e", "\u2066", "\u2060", "\ufeff", "\u00ad"):
        assert folded(f"\u0645\u06cc{dropped}\u0634\u0648\u062f") == PERSIAN_RUN_ON, dropped
        assert folded(f"{dropped}{PERSIAN}{dropped}") == PERSIAN, dropped
    assert folded(zero_width) == folded(PERSIAN_RUN_ON)


def _rows(per_class: int, labels: list[str]) -> list[str]:
    return [f"text {j} about class {i},{lab}" for i, lab in enumerate(labels)
            for j in range(per_class)]


def test_labels_that_differ_by_a_zero_width_non_joiner_are_two_classes(tmp_path):
    """Persian "mi-shavad" with and without its ZWNJ were one class spelled two ways."""
    path = tmp_path / "t.csv"
    path.write_text("\n".join(["text,label"] + _rows(3, [PERSIAN, PERSIAN_RUN_ON, "other"]))
                    + "\n", encoding="utf-8")
    _, labels = read_text_table(path)
    assert sorted(set(labels)) == sorted([PERSIAN, PERSIAN_RUN_ON, "other"])
    fam = TextTable(path, ways=3, shots=1, queries=2)
    assert sorted(fam.class_names) == sorted([PERSIAN, PERSIAN_RUN_ON, "other"])


def test_labels_that_differ_by_a_zero_width_space_are_still_one_class(tmp_path):
    path = tmp_path / "t.csv"
    spaced = "\u0645\u06cc\u200b\u0634\u0648\u062f"
    path.write_text("\n".join(["text,label"] + _rows(3, [spaced, PERSIAN_RUN_ON, "other"]))
                    + "\n", encoding="utf-8")
    pair = re.escape(f"{spaced!r} and {PERSIAN_RUN_ON!r}")
    with pytest.raises(ValueError, match=r"t.csv: 1 label\(s\) are spelled more than one "
                                         rf"way, .*: {pair}; spell each class one way$"):
        read_text_table(path)


def test_texts_that_differ_by_a_joiner_are_two_texts_and_by_a_zero_width_space_one(tmp_path):
    """An emoji ZWJ sequence and its parts were one text, read once."""
    lines = ["text,label", f"{FAMILY},home", f"{PEOPLE},crowd", f"{PERSIAN},verb",
             f"{PERSIAN_RUN_ON},noun"] + _rows(2, ["home", "crowd", "verb", "noun"])
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fam = TextTable(path, ways=2, shots=1, queries=2)
    assert fam.repeated == 0
    assert {FAMILY, PEOPLE, PERSIAN, PERSIAN_RUN_ON} <= set(fam.texts)
    lines.append(f"{PEOPLE[0]}\u200b{PEOPLE[1:]},home")   # PEOPLE with a zero-width space
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"1 text\(s\) carry more than one label, e.g. .* as "
                                         r"'crowd', 'home'; a text must have one label "
                                         r"\(texts that differ only in case, white space, "
                                         r"Unicode form or format characters other than ZWJ "
                                         r"and ZWNJ are one text\): fix or remove those rows$"):
        TextTable(path, ways=2, shots=1, queries=2)


@pytest.mark.parametrize("blank", ["\u200c", "\u200d\u200c", " \u200d \u200b"])
def test_a_text_of_only_joiners_has_nothing_visible_and_is_refused(tmp_path, blank):
    assert not visible(blank)
    path = tmp_path / "t.csv"
    path.write_text("\n".join(["text,label"] + _rows(3, ["a", "b"]) + [f'"{blank}",a'])
                    + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"t.csv: 1 row\(s\) have texts with no visible "
                                         r"character \(column 'text'\) at line 8: "):
        read_text_table(path)
