"""Accuracy parity with scikit-learn: on its bundled real datasets and two nonlinear generators,
one shared split, mpidml's models at N = 1, 2 (and 4) against scikit-learn's estimators, in
accuracy (R^2 for regression) and time."""
import os
import time

import h5py

from harness import WORK, mpidml, table


def measure(args):
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler
    cases = [("digits", datasets.load_digits), ("breast_cancer", datasets.load_breast_cancer),
             ("wine", datasets.load_wine), ("iris", datasets.load_iris), ("diabetes", datasets.load_diabetes),
             ("moons (nonlinear)", lambda return_X_y: datasets.make_moons(3000, noise=0.25, random_state=0)),
             ("circles (nonlinear)",
              lambda return_X_y: datasets.make_circles(3000, noise=0.1, factor=0.5, random_state=0))]
    rows = []
    ranks = (1, 2) if args.quick else (1, 2, 4)
    for name, load in cases:
        X, y = load(return_X_y=True)
        regression = name == "diabetes"
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0,
                                              stratify=None if regression else y)
        path = os.path.join(WORK, f"parity-{name.split()[0]}.h5")
        with h5py.File(path, "w") as f:
            f["train/X"], f["train/y"], f["test/X"], f["test/y"] = Xtr, ytr, Xte, yte
        sc = StandardScaler().fit(Xtr)
        A, B = sc.transform(Xtr), sc.transform(Xte)
        if regression:
            t0 = time.perf_counter()
            r2 = Ridge(alpha=1.0).fit(A, ytr).score(B, yte)
            rows.append([name, "Ridge (sklearn)", f"{r2:.4f}", f"{time.perf_counter() - t0:.2f}"])
            models = [("linear", ["--lr", 0.01, "--epochs", 60])]
        else:
            for label, est in (("LogisticRegression", LogisticRegression(max_iter=2000)),
                               ("SGDClassifier", SGDClassifier(random_state=0)),
                               ("MLPClassifier", MLPClassifier((128,), max_iter=500, random_state=0))):
                t0 = time.perf_counter()
                acc = est.fit(A, ytr).score(B, yte)
                rows.append([name, f"{label} (sklearn)", f"{acc:.4f}", f"{time.perf_counter() - t0:.2f}"])
            models = [("auto", ["--epochs", 30]), ("mlp", ["--epochs", 30, "--optimizer", "adam", "--lr", 0.003])]
        for model, extra in models:
            for n in ranks:
                # small sets: enough epochs that every rank takes >= 300 local steps
                epochs = max(int(extra[extra.index("--epochs") + 1]), -(-300 * n * 16 // len(ytr)))
                extra_n = [*extra[:extra.index("--epochs")], *extra[extra.index("--epochs") + 2:], "--epochs", epochs]
                doc = mpidml(n, ["--data", path, "--model", model, "--batch-size", 16, "--sync-every", 4, *extra_n],
                             args.mpiexec)
                metric = doc["test"]["r2"] if regression else doc["test"]["accuracy"]
                rows.append([name, f"mpidml {doc['model']} N={n}", f"{metric:.4f}", f"{doc['timing']['wall_s']:.2f}"])
    text = ("scikit-learn's bundled real datasets, and two of its generators that no linear model "
            "separates, one 75/25 split (stratified, random_state 0) shared by both sides, features "
            "standardized on the training rows. Accuracy (R^2 for diabetes) on the held-out rows; time in "
            "seconds (mpidml: the whole run, distribution included).\n\n")
    text += table(["dataset", "model", "accuracy / R^2", "time (s)"], rows)
    return "Accuracy parity with scikit-learn", text
