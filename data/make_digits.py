"""Rebuild data/digits.h5 from scikit-learn's copy of the UCI optical digits data.

Source: E. Alpaydin, C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine
Learning Repository (1998), https://doi.org/10.24432/C50P49, licensed CC BY 4.0; the
1797 x 64 version shipped in scikit-learn (sklearn/datasets/data/digits.csv.gz).
Run once: python data/make_digits.py (needs scikit-learn); the result is committed.
"""
import gzip
import os

import h5py
import numpy as np
import sklearn

src = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "data", "digits.csv.gz")
with gzip.open(src) as f:
    raw = np.loadtxt(f, delimiter=",")
X, y = raw[:, :-1].astype(np.float32), raw[:, -1].astype(np.int64)
rng = np.random.default_rng(20261126)
test = np.zeros(len(y), bool)
for c in np.unique(y):                      # stratified 80/20 split
    idx = rng.permutation(np.flatnonzero(y == c))
    test[idx[:int(round(0.2 * len(idx)))]] = True
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.h5")
with h5py.File(out, "w") as f:
    f["train/X"], f["train/y"] = X[~test], y[~test]
    f["test/X"], f["test/y"] = X[test], y[test]
    f.attrs["source"] = "UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998), via scikit-learn"
    f.attrs["license"] = "CC BY 4.0"
    f.attrs["doi"] = "10.24432/C50P49"
print(out, (~test).sum(), test.sum())
