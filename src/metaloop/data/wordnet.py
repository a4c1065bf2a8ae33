"""WordNet 3.0 nouns as a text-classification dataset, read from the database files.

The Debian package ``wordnet-base`` installs the Princeton database in ``/usr/share/wordnet``.
Only ``data.noun`` is read. Each of its lines is one synset::

    offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt [ptr ...] | gloss

``w_cnt`` is two hex digits, ``p_cnt`` three decimal digits, and each pointer is
``symbol offset pos source/target`` (``@`` hypernym, ``~`` hyponym). Header lines start with
two spaces.

Categories and examples:

* every synset is assigned to ONE category, the target of its first ``@`` (hypernym)
  pointer, so that no example belongs to two classes (1,422 noun synsets have two or more
  hypernyms; instance hypernyms ``@i`` are not followed);
* a category is a hypernym synset with at least ``min_hyponyms`` (default 20) synsets so
  assigned that have a gloss. WordNet 3.0 has 505 such categories holding 22,611 examples;
* an example is a member's gloss (definition and usage examples) with the member's own lemmas
  replaced by ``mask`` (case-insensitively, with plural endings), so the text does not name
  what it defines. The category's own name may still occur, as definitions do;
* categories go to the splits by a hash of their synset offset (60% / 20% / 20% of the hash
  range for train / val / test), so the split of a category never depends on which other
  categories exist. With the defaults: 280 train (12,116 examples), 120 val (5,425) and 105
  test (5,070) categories.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from metaloop.data.omniglot import data_env_dir

DEFAULT_ROOT = Path("/usr/share/wordnet")
SPLITS = ("train", "val", "test", "trainval")
_SPLIT_FRACTIONS = (("train", 60), ("val", 80), ("test", 100))   # cumulative percentages


@dataclass(frozen=True)
class Synset:
    """One noun synset: ``offset`` (its id), ``lemmas`` (with underscores), hypernym
    offsets in file order, and the gloss."""

    offset: int
    lemmas: tuple[str, ...]
    hypernyms: tuple[int, ...]
    gloss: str


@dataclass(frozen=True)
class Category:
    """A class: a hypernym synset and the examples (member synsets) assigned to it.

    Attributes:
        offset: the category synset's offset.
        lemmas: its lemmas, with spaces (``("dog", "domestic dog", "Canis familiaris")``).
        gloss: its gloss.
        members: offsets of the member synsets, sorted.
        split: ``"train"``, ``"val"`` or ``"test"``.
    """

    offset: int
    lemmas: tuple[str, ...]
    gloss: str
    members: tuple[int, ...]
    split: str

    @property
    def name(self) -> str:
        return self.lemmas[0]

    def wordings(self) -> dict[str, str]:
        """Candidate label wordings for prompting: ``name``, ``synonyms`` and ``gloss``."""
        definition = self.gloss.split(';')[0].strip()
        return {"name": self.name, "synonyms": ", ".join(self.lemmas),
                "gloss": f"{self.name}: {definition}"}


@dataclass(frozen=True)
class WordNetNouns:
    """The categories of every split and the example texts.

    Attributes:
        categories: all categories, sorted by offset.
        texts: ``texts[offset]`` is the masked gloss of member synset ``offset``.
        min_hyponyms: the threshold the categories were chosen with.
    """

    categories: tuple[Category, ...]
    texts: dict[int, str]
    min_hyponyms: int

    def split(self, name: str) -> list[Category]:
        """The categories of split ``train``, ``val``, ``test`` or ``trainval``."""
        if name not in SPLITS:
            raise ValueError(f"unknown WordNet split {name!r}; choose one of {list(SPLITS)}")
        want = ("train", "val") if name == "trainval" else (name,)
        return [c for c in self.categories if c.split in want]

    def counts(self) -> dict[str, dict[str, int]]:
        """Categories and examples per split."""
        return {s: {"categories": len(cs), "examples": sum(len(c.members) for c in cs)}
                for s in ("train", "val", "test") for cs in [self.split(s)]}


def split_of(offset: int) -> str:
    """The split of a category, from the sha256 of its 8-digit offset (stable forever)."""
    h = int(hashlib.sha256(f"{offset:08d}".encode()).hexdigest(), 16) % 100
    return next(name for name, bound in _SPLIT_FRACTIONS if h < bound)


def hide_lemmas(gloss: str, lemmas, mask: str = "___") -> str:
    """``gloss`` with each lemma (underscores as spaces, any case, plural -s/-es) -> mask."""
    low = gloss.lower()
    words = sorted({w.replace("_", " ") for w in lemmas if w.replace("_", " ").lower() in low},
                   key=len, reverse=True)
    if not words:   # the common case: no regex to compile
        return gloss
    alt = "|".join(re.escape(w) for w in words)
    return re.sub(rf"(?<!\w)(?:{alt})(?:e?s)?(?!\w)", mask, gloss, flags=re.IGNORECASE)


def parse_line(line: str, where: str = "data.noun") -> Synset:
    """Parse one synset line of a WordNet data file.

    Raises:
        ValueError: naming ``where`` (file and line) when the line is malformed.
    """
    head, bar, gloss = line.partition(" | ")
    f = head.split()
    try:
        if not bar or len(f) < 6:
            raise ValueError("missing fields or gloss separator ' | '")
        offset, w_cnt = int(f[0]), int(f[3], 16)
        i = 4 + 2 * w_cnt
        p_cnt = int(f[i])
        if len(f) < i + 1 + 4 * p_cnt:
            raise ValueError(f"expected {w_cnt} words and {p_cnt} pointers")
        lemmas = tuple(f[4:i:2])
        symbols, targets = f[i + 1:i + 1 + 4 * p_cnt:4], f[i + 2:i + 2 + 4 * p_cnt:4]
        hypernyms = tuple(int(t) for s, t in zip(symbols, targets) if s == "@")
    except (ValueError, IndexError) as e:
        raise ValueError(f"{where}: malformed synset line: {e}: {line[:80]!r}") from e
    return Synset(offset, lemmas, hypernyms, gloss.strip())


def read_synsets(path: str | os.PathLike) -> dict[int, Synset]:
    """All synsets of a ``data.*`` file, by offset (license header lines skipped)."""
    path = Path(path)
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.startswith("  ") or not line.strip():
                continue
            s = parse_line(line, f"{path}:{n}")
            out[s.offset] = s
    if not out:
        raise ValueError(f"{path}: no synsets found; is this a WordNet data file?")
    return out


def search_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """``[root]`` if given, else ``[$METALOOP_DATA/wordnet (if set), /usr/share/wordnet]``.
    ValueError: ``$METALOOP_DATA`` is set but names no folder (an empty value, a file:
    ``metaloop.data.omniglot.data_env_dir``)."""
    if root is not None:
        return [Path(root).expanduser()]
    data = data_env_dir()
    return ([] if data is None else [data / "wordnet"]) + [DEFAULT_ROOT]


def find_data_noun(root: str | os.PathLike | None = None) -> Path:
    """The ``data.noun`` file.

    Raises:
        FileNotFoundError: listing the folders searched, and how to install the data.
    """
    dirs = search_dirs(root)
    for d in dirs:
        if (d / "data.noun").is_file():
            return d / "data.noun"
    raise FileNotFoundError(f"WordNet data.noun not found in {[str(d) for d in dirs]}; "
                            f"install it with 'apt-get install wordnet-base', or give the "
                            f"folder that holds it: root= (--root on the command line)")


def load_wordnet(root: str | os.PathLike | None = None, min_hyponyms: int = 20,
                 mask: str = "___") -> WordNetNouns:
    """The WordNet noun categories and their examples (cached per arguments).

    Args:
        root: folder with ``data.noun``, or None (``$METALOOP_DATA/wordnet``, then
            ``/usr/share/wordnet``).
        min_hyponyms: fewest members a category needs (>= 2).
        mask: what replaces a member's own lemmas in its gloss.

    Raises:
        FileNotFoundError: if ``data.noun`` is missing.
        ValueError: for a malformed file or bad ``min_hyponyms``.
    """
    if not isinstance(min_hyponyms, int) or isinstance(min_hyponyms, bool) or min_hyponyms < 2:
        raise ValueError(f"min_hyponyms must be an int >= 2, got {min_hyponyms!r}")
    return _load(str(find_data_noun(root).resolve()), min_hyponyms, mask)


@functools.lru_cache(maxsize=4)
def _load(path: str, min_hyponyms: int, mask: str) -> WordNetNouns:
    synsets = read_synsets(path)
    members: dict[int, list[int]] = {}
    for s in synsets.values():
        if s.hypernyms and s.gloss:
            members.setdefault(s.hypernyms[0], []).append(s.offset)
    cats, texts = [], {}
    for off in sorted(members):
        if len(members[off]) < min_hyponyms or off not in synsets:
            continue
        c = synsets[off]
        cats.append(Category(off, tuple(w.replace("_", " ") for w in c.lemmas), c.gloss,
                             tuple(sorted(members[off])), split_of(off)))
        for m in members[off]:
            texts[m] = hide_lemmas(synsets[m].gloss, synsets[m].lemmas, mask)
    if not cats:
        raise ValueError(f"{path}: no category has {min_hyponyms} or more hyponyms")
    return WordNetNouns(tuple(cats), texts, min_hyponyms)
