"""Training data from several domains, and a sampler balanced over domain and class.

A domain is one folder of face crops by label. A folder holding ``train/`` and
``validation/`` (the FER2013 layout) brings its own validation split; any other folder
is split here, stratified with a fixed seed. Images are loaded once, through the
inference resize (``resize_face``), and kept in memory as uint8 at the model's size.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emotion_stream.labels import EMOTIONS
from model.evaluation import list_labelled
from model.metadata import ModelMetadata
from model.preprocessing import resize_face

log = logging.getLogger(__name__)

VALIDATION_NAMES = ("validation", "val")


@dataclass
class Domain:
    name: str
    images: np.ndarray  # (n, H, W, C) uint8 at the model's input size
    labels: np.ndarray  # (n,) indices into EMOTIONS
    people: np.ndarray | None = None  # (n,) who each image shows, when the file names say

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        return {EMOTIONS[c]: n for c, n in sorted(Counter(self.labels.tolist()).items())}

    def subset(self, indices: np.ndarray) -> Domain:
        people = None if self.people is None else self.people[indices]
        return Domain(self.name, self.images[indices], self.labels[indices], people)


# "Al_Gore_0002.jpg" (and its crop "Al_Gore_0002.png.jpg"): a person, then a number.
_PERSON = re.compile(r"^(?P<person>.+?)_\d+$")


def people_of(paths: Sequence[Path]) -> np.ndarray | None:
    """Who each image shows, from file names of the form ``<person>_<number>``; None
    unless nearly all (90 %) are named so (a name that is not is its own person)."""
    stems = [path.name.split(".")[0] for path in paths]
    matches = [_PERSON.match(stem) for stem in stems]
    if sum(m is not None for m in matches) < 0.9 * len(paths):
        return None
    return np.asarray([m.group("person") if m else stem for m, stem in zip(matches, stems)])


def load_folder(folder: Path, meta: ModelMetadata, name: str | None = None) -> Domain:
    paths, labels = list_labelled(folder)

    def load(path: Path) -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f"{path}: unreadable image")
        if image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        return resize_face(image, meta).reshape(meta.input_height, meta.input_width, meta.channels)

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        images = np.stack(list(pool.map(load, paths)))
    return Domain(name or folder.name, images, labels, people_of(paths))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): ``fraction`` of every class to validation (at least one
    when the class has two or more images), shuffled with a fixed seed."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(len(members) * fraction))
        if fraction > 0 and len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val += members[:n_val].tolist()
        train += members[n_val:].tolist()
    return rng.permutation(np.asarray(train, np.int64)), rng.permutation(np.asarray(val, np.int64))


def person_split(labels: np.ndarray, people: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with no person on both sides, about ``fraction`` of every
    class in validation: people are visited rarest class first (shuffled with a fixed
    seed within that order) and go to validation when they fill what their classes still
    need, no class ending more than a quarter over its share. A class whose people all went to validation
    gets its smallest one back."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=len(EMOTIONS))
    share = np.where(counts >= 2, np.maximum(1, np.round(counts * fraction)), 0).astype(np.int64)
    ceiling = share + share // 4  # a class may end up to a quarter over its share
    taken = np.zeros_like(share)
    names = np.unique(people)
    per_person = {str(n): np.bincount(labels[people == n], minlength=len(EMOTIONS)) for n in names}
    order = sorted(rng.permutation(names).tolist(), key=lambda n: counts[per_person[n] > 0].min())
    chosen: list[str] = []
    for name in order:
        have = per_person[name]
        if np.any((have > 0) & (taken < share)) and np.all(taken + have <= ceiling):
            chosen.append(name)
            taken += have
    for cls in np.flatnonzero(counts):
        holders = [n for n in chosen if per_person[n][cls]]
        if holders and sum(per_person[n][cls] for n in holders) == counts[cls] and len(holders) > 1:
            chosen.remove(min(holders, key=lambda n: int(per_person[n].sum())))
    in_val = np.isin(people, chosen)
    return rng.permutation(np.flatnonzero(~in_val)), rng.permutation(np.flatnonzero(in_val))


def load_domains(folders: Sequence[Path], meta: ModelMetadata, val_split: float, seed: int) -> tuple[list[Domain], list[Domain]]:
    """(train domains, validation domains), one of each per folder, in order."""
    train, val = [], []
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder")
        own_val = next((folder / n for n in VALIDATION_NAMES if (folder / n).is_dir()), None)
        if (folder / "train").is_dir() and own_val is not None:
            train.append(load_folder(folder / "train", meta, folder.name))
            val.append(load_folder(own_val, meta, folder.name))
        else:
            whole = load_folder(folder, meta)
            t, v = np.empty(0, np.int64), np.empty(0, np.int64)
            if whole.people is not None:
                # The same person in both splits rewards memorising people, not expressions.
                t, v = person_split(whole.labels, whole.people, val_split, seed)
                if len(v):
                    log.info("domain %s: split by person (%d people, %d in validation)", whole.name,
                             len(np.unique(whole.people)), len(np.unique(whole.people[v])))
                else:
                    log.warning("domain %s: too few people to split by person; split by image", whole.name)
            if not len(v):
                t, v = stratified_split(whole.labels, val_split, seed)
            train.append(whole.subset(t))
            val.append(whole.subset(v))
        log.info("domain %s: %d train, %d validation images", train[-1].name, len(train[-1]), len(val[-1]))
        if not len(train[-1]) or not len(val[-1]):
            raise ValueError(f"{folder}: too few images for a training and a validation split")
    names = [d.name for d in train]
    if len(set(names)) != len(names):
        raise ValueError(f"two domains share a folder name: {names}")
    return train, val


class BalancedSampler:
    """Draws (domain, index) pairs: each domain with probability proportional to its
    size**domain_power (0: equally often), and within a domain each class with
    probability proportional to count**power. power 0 is uniform over classes, 1 follows
    the data; in between, a class of six images is shown often but not hundreds of times
    per epoch. Likewise a domain of 2,400 photos beside one of 25,000 faces is not seen
    ten times as often per image at domain_power 0.5."""

    def __init__(self, domains: Sequence[Domain], power: float = 0.3, domain_power: float = 0.0) -> None:
        self.domains = domains
        self._classes: list[list[np.ndarray]] = []
        self._class_p: list[np.ndarray] = []
        for domain in domains:
            members = [np.flatnonzero(domain.labels == c) for c in np.unique(domain.labels)]
            weights = np.array([len(m) for m in members], np.float64) ** power
            self._classes.append(members)
            self._class_p.append(weights / weights.sum())
        sizes = np.array([len(d) for d in domains], np.float64) ** domain_power
        self.domain_p = sizes / sizes.sum()

    def draw(self, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        picks = []
        if np.allclose(self.domain_p, self.domain_p[0]):
            chosen = rng.integers(0, len(self.domains), n)
        else:
            chosen = rng.choice(len(self.domains), size=n, p=self.domain_p)
        for d in chosen:
            members = self._classes[d][rng.choice(len(self._classes[d]), p=self._class_p[d])]
            picks.append((int(d), int(members[rng.integers(len(members))])))
        return picks

    def class_prior(self) -> dict[str, float]:
        """The share of each class over all batches: the label prior the model is trained
        under, which tracking divides out to a power (see ``tracks.camera.Track.dominant``)."""
        prior = np.zeros(len(EMOTIONS))
        for domain, members, probs, share in zip(self.domains, self._classes, self._class_p, self.domain_p):
            for m, p in zip(members, probs):
                prior[int(domain.labels[m[0]])] += p * share
        return {label: round(float(p), 4) for label, p in zip(EMOTIONS, prior) if p > 0}

    def class_share(self) -> dict[str, dict[str, float]]:
        """Expected share of each class per domain (for the model card)."""
        return {
            domain.name: {EMOTIONS[int(domain.labels[m[0]])]: round(float(p), 4) for m, p in zip(members, probs)}
            for domain, members, probs in zip(self.domains, self._classes, self._class_p)
        }
