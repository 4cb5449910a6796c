"""What the tables say, in words: the paper's claims with a verdict each (confirmed,
refuted, undecided by paired intervals) and the findings prose of chapters 05–08."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from fdcam.errors import FdcamError
from fdcam.evaluation.statistics import (
    LOWER_IS_BETTER,
    MIN_IMAGES,
    paired_differences,
    paired_verdicts,
)
from fdcam.paper.figure_findings import join_words
from fdcam.paper.names import method_label
from fdcam.paper.numbers import format_count_range, format_difference
from fdcam.paper.runs import hard_pairs, read_run_results, table_methods
from fdcam.paper.settings import FAITHFULNESS_METRICS
from fdcam.paper.setups import Setup
from fdcam.paper.tables import paired_vs_fdcam, ranks


@dataclass(frozen=True)
class Claim:
    """A claim of the paper that one of its tables makes: `method` is better than each of
    `rivals` (None: the table's other methods) on every metric of the table, except that on
    a metric of `except_for` the rivals named there are not compared (the paper places them
    above `method`). `paper` is the paper's own sentence (or table note) that makes it;
    `short` names the claim in a sentence of the landing page (`conclusion`)."""

    claim: str
    table: str
    method: str
    rivals: tuple[str, ...] | None = None
    except_for: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    paper: str = ""
    short: str = ""


#: The claims that the paper's tables make, as the paper makes them (Table "II hard": Table II
#: on its hard subset, `fdcam.paper.runs.hard_pairs`, the paper's Fig. 6 claim).
CLAIMS: tuple[Claim, ...] = (
    Claim("FD-CAM is best in insertion and overall, second in deletion after Group-CAM "
          "(Table I)", "I", "fdcam", except_for={"deletion": ("groupcam",)},
          paper="“It can be observed FD-CAM can generally outperform other methods on "
                "faithfulness” (§IV-B); Table I marks FD-CAM best in insertion and overall, "
                "second (italic) in deletion, where Group-CAM is best.",
          short="FD-CAM best in insertion and overall, second in deletion (Table I)"),
    Claim("FD-CAM points at the right object more often than every baseline (Table II)", "II",
          "fdcam",
          paper="“Our FD-CAM outperforms both kinds of methods by combining them in a proper "
                "manner” (§IV-C, Table II).",
          short="FD-CAM the best at the pointing game (Table II)"),
    Claim("… also for each image's least probable class (§IV-C's expectation, measured on "
          "Table II's hard pairs)", "II hard", "fdcam",
          paper="“For the non-dominant class in the image, even its probability may be low, "
                "an effective method is still expected to correctly visualize the regions "
                "…” (§IV-C, Fig. 6).",
          short="… also for the least probable class (§IV-C, on Table II's hard pairs)"),
    Claim("grouping improves switch-off scores (Table III: g+off over ng+off)", "III",
          "fdcam-g-off", ("fdcam-ng-off",),
          paper="“the channel grouping and the switch-on score can both improve the "
                "performance” (§IV-D, Table III).",
          short="grouping improves FD-CAM (Table III)"),
    Claim("switch-on improves on switch-off alone (Table III: full over g+off)", "III",
          "fdcam", ("fdcam-g-off",),
          paper="“… and the full version FD-CAM can produce the best AUC values” "
                "(§IV-D, Table III).",
          short="switch-on improves FD-CAM (Table III)"),
    Claim("Eq. 10's combination is the best of Table IV", "IV", "fdcam",
          paper="“From Table IV, the proposed weighting scheme can achieve the best "
                "performance” (§IV-D).",
          short="Eq. 10 the best combination (Table IV)"),
)


def claim_verdicts(setup: Setup, *, n_resamples: int = 2000,
                   tables: Sequence[str] | None = None,
                   min_images: int = MIN_IMAGES) -> pd.DataFrame:
    """For each claim of `CLAIMS` and metric: confirmed, refuted or undecided, by paired 95 %
    intervals of (rival − claimed method) over the images (or image-class pairs) both ran on.
    `tables` (e.g. ``("II", "II hard")``) keeps those claims only; default all. On a metric
    where the paper places some rivals above the claimed method (`Claim.except_for`: Group-CAM
    in Table I's deletion), only the others are compared.

    * confirmed — every rival's interval excludes 0 on the claimed method's side;
    * refuted — some rival's interval excludes 0 on the rival's side;
    * undecided — otherwise (some interval contains 0, none against the claim);
    * too few images — some comparison rests on fewer than `min_images` images (the
      bootstrap resamples images, so their number, not the pairs', bounds what it can say).

    Columns: claim, metric, verdict, evidence (the deciding rival's mean difference and
    interval, e.g. "Group-CAM −0.004 [−0.009, +0.001]": for a refuted claim, of the rivals
    whose interval refutes it, the one with the largest advantage; otherwise the closest
    rival, the one with the largest mean advantage; for too few images, the closest of the
    rivals with the fewest images), n (the images or pairs behind that comparison: a rival
    run on a subset, like Score-CAM, has fewer than the others) and paper (the sentence).
    """
    known = {claim.table for claim in CLAIMS}
    if tables is not None and set(tables) - known:
        raise FdcamError(f"unknown table(s) {', '.join(sorted(set(tables) - known))}; "
                         f"expected some of {', '.join(sorted(known))}")
    rows = []
    for claim in CLAIMS:
        if tables is not None and claim.table not in tables:
            continue
        table, _, subset = claim.table.partition(" ")
        method = claim.method
        kind = "pointing" if table == "II" else "faithfulness"
        metrics: tuple[str, ...] = ("hit",) if table == "II" else FAITHFULNESS_METRICS
        path = setup.pointing_csv if table == "II" else setup.faithfulness_csv
        if path.exists():
            df = read_run_results(setup, kind, table_methods(setup, table))
            if table == "II":
                df = hard_pairs(df) if subset == "hard" else df
                df = df.assign(hit=df["hit"].astype("Float64") * 100)
        else:
            df = pd.DataFrame(columns=["image", "method", "target", *metrics, "error"])
        chosen = set(table_methods(setup, table) if claim.rivals is None
                     else claim.rivals) - {method}
        df = df[df["method"].isin(chosen | {method})]
        if method not in set(df["method"]) or not chosen & set(df["method"]):
            for metric in metrics:
                rows.append({"claim": claim.claim, "metric": _metric_name(metric),
                             "verdict": "no data", "n": 0, "evidence": "",
                             "paper": claim.paper})
            continue
        diff = paired_differences(df, method, metrics=list(metrics), seed=setup.seed,
                                  n_resamples=n_resamples)
        shared = {rival: _shared_images(df, method, rival) for rival in chosen & set(df["method"])}
        for metric in metrics:
            compared = set(shared) - set(claim.except_for.get(metric, ()))
            if not compared:
                rows.append({"claim": claim.claim, "metric": _metric_name(metric),
                             "verdict": "no data", "n": 0, "evidence": "",
                             "paper": claim.paper})
                continue
            part = diff[(diff["metric"] == metric) & diff["method"].isin(compared)]
            images = min(shared[rival] for rival in compared)
            fewest = [rival for rival in compared if shared[rival] == images]
            # Each rival's word against the claimed method (`paired_verdicts`, the rule
            # that ``fdcam compare`` prints): a rival "better" refutes the claim, all rivals
            # "worse" confirm it.
            words = paired_verdicts(part)
            sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
            if images < min_images:
                verdict = "too few images"
            elif (words == "better").any():
                verdict = "refuted"
            elif (words == "worse").all():
                verdict = "confirmed"
            else:
                verdict = "undecided"
            # The comparison that decides: for too few images the closest of the rivals with
            # the fewest; for a refuted claim the refuting rival with the largest advantage
            # (the closest rival may have a wide interval that refutes nothing); otherwise
            # the closest rival.
            advantage = sign * part["mean_difference"]
            candidates = {"too few images": part["method"].isin(fewest),
                          "refuted": words == "better"}.get(verdict)
            if candidates is not None and candidates.any():
                advantage = advantage[candidates]
            closest = part.loc[advantage.idxmax()]
            # rival − claimed; named in full where the claimed method is not FD-CAM
            # itself (Table III's g+off), since elsewhere a difference is against FD-CAM.
            rival = method_label(str(closest["method"]))
            if method != "fdcam":
                rival = f"{rival} − {method_label(method)}"
            evidence = (f"{rival} "
                        + format_difference(closest["mean_difference"], closest["ci_low"],
                                            closest["ci_high"], _places(_metric_name(metric))))
            rows.append({"claim": claim.claim, "metric": _metric_name(metric),
                         "verdict": verdict, "n": int(closest["n"]), "evidence": evidence,
                         "paper": claim.paper})
    return pd.DataFrame(rows, columns=["claim", "metric", "verdict", "n", "evidence", "paper"])


def cross_checks(named: Mapping[str, Setup], table: str = "I", *,
                 n_resamples: int = 2000) -> pd.DataFrame:
    """One table's claim decided at several setups (another layer, another network), for
    the results page: `claim_verdicts` of each setup of `named` (a name such as
    "EfficientNet-Lite0 at `_swish`" -> its setup), the ``claim`` column holding the name.
    A setup whose rows are missing gives "no data"."""
    parts = []
    for name, made in named.items():
        found = claim_verdicts(made, tables=[table], n_resamples=n_resamples)
        parts.append(found.assign(claim=name).drop(columns="paper"))
    return (pd.concat(parts, ignore_index=True) if parts
            else pd.DataFrame(columns=["claim", "metric", "verdict", "n", "evidence"]))


def cross_check_sentence(frame: pd.DataFrame) -> str:
    """`cross_checks` in one sentence, against its first setup (the main layer): which of
    the other setups reach the same verdict in every metric, and where each other one
    differs (its verdict, then the first setup's)."""
    if frame.empty:
        return "No cross-check has rows yet."
    setups = list(dict.fromkeys(frame["claim"]))
    verdict = frame.set_index(["claim", "metric"])["verdict"]
    first = setups[0]
    metrics = list(dict.fromkeys(frame.loc[frame["claim"] == first, "metric"]))
    same, different = [], []
    for other in setups[1:]:
        changes = [f"{metric} ({verdict[(other, metric)]}, not {verdict[(first, metric)]})"
                   if (other, metric) in verdict.index else f"{metric} (no rows)"
                   for metric in metrics if (other, metric) not in verdict.index
                   or verdict[(other, metric)] != verdict[(first, metric)]]
        if changes:
            different.append(f"{other} differs in " + ", ".join(changes))
        else:
            same.append(other)
    parts = []
    if same:
        parts.append(", ".join(same) + (" reaches" if len(same) == 1 else " reach")
                     + " the same verdict in every metric")
    parts.extend(different)
    if not parts:
        return f"Only {first} has rows."
    return f"Against {first}: " + "; ".join(parts) + "."


def replication(first: Setup, second: Setup, table: str = "I") -> pd.DataFrame:
    """Rival by rival, FD-CAM's paired verdict against each rival of `table` on two setups
    (the main layer, and the same table on another network or layer). Columns: method,
    label, metric, first, second — each "FD-CAM better", "rival better", "undecided" or
    "too few images" by `paired_verdicts` (`fdcam.paper.by_layer.VERDICT_WORDS`), or
    "no rows" where that setup has no rows of the rival (or of FD-CAM)."""
    from fdcam.paper.by_layer import VERDICT_WORDS

    words = []
    for made in (first, second):
        try:
            paired = paired_vs_fdcam(made, table)
        except FdcamError:  # no FD-CAM rows yet
            paired = pd.DataFrame(columns=["method", "label", "metric", "n", "ci_low",
                                           "ci_high"])
        paired = paired[paired["method"] != "fdcam"]
        said = paired_verdicts(paired, paired["n"]).map(VERDICT_WORDS) if len(paired) else []
        words.append(paired.assign(word=said).set_index(["method", "metric"]))
    keys = list(dict.fromkeys([*words[0].index, *words[1].index]))
    rows = []
    for method, metric in keys:
        rows.append({"method": method, "label": method_label(method), "metric": metric,
                     "first": words[0]["word"].get((method, metric), "no rows"),
                     "second": words[1]["word"].get((method, metric), "no rows")})
    return pd.DataFrame(rows, columns=["method", "label", "metric", "first", "second"])


def replication_sentence(frame: pd.DataFrame, first: str, second: str) -> str:
    """`replication` in one sentence: on how many of the comparisons that both setups
    (named `first` and `second`, e.g. "EfficientNet-Lite0 at `x`") ran on enough images
    the paired intervals say the same — FD-CAM better on both, the rival better on both,
    undecided on both — and where they differ; rivals without rows, or with too few images,
    on one of them are named, not counted. Agreement in "undecided" is agreement that
    neither run can tell the two methods apart, not a replicated advantage."""
    if frame.empty:
        return f"No rival has rows on both {first} and {second} yet."
    short = {name: name.split(" at ")[0] for name in (first, second)}
    if short[first] == short[second]:
        short = {first: first, second: second}
    unknown = {"no rows", "too few images"}
    both = frame[~frame["first"].isin(unknown) & ~frame["second"].isin(unknown)]
    same = both[both["first"] == both["second"]]
    phrases = {"FD-CAM better": "with FD-CAM better on both",
               "rival better": "with the rival better on both",
               "undecided": "undecided on both"}
    counts = same["first"].value_counts()
    named = [f"{counts[word]} {phrase}" for word, phrase in phrases.items() if word in counts]
    if both.empty:
        text = (f"Rival by rival, {first} and {second} have no comparison of FD-CAM with a "
                f"rival that both ran on enough images yet")
    else:
        text = (f"Rival by rival, {second} agrees with {first} on {len(same)} of the "
                f"{len(both)} comparisons of FD-CAM with a rival in one metric that both ran "
                f"on enough images" + (f" ({', '.join(named)})" if named else ""))
    differ = both[both["first"] != both["second"]]
    if len(differ):
        text += "; they differ on " + ", ".join(
            f"{r.label} {METRIC_NAMES.get(r.metric, r.metric)} ({r.first} on "
            f"{short[first]}, {r.second} on {short[second]})"
            for r in differ.itertuples(index=False))
    for column, name in (("first", first), ("second", second)):
        for word in ("no rows", "too few images"):
            missing = list(frame.loc[frame[column] == word, "label"].drop_duplicates())
            if missing:
                text += (f"; {join_words(missing)} {'has' if len(missing) == 1 else 'have'} "
                         f"{word} on {short[name]} yet")
    return text + "."


def replication_line(checks: pd.DataFrame, agreement: pd.DataFrame, first: str,
                     second: str) -> str:
    """The replication on the landing page: Table I's claim on `second` (another network)
    beside `first` (the main layer), metric by metric, from `cross_checks` (whose ``claim``
    column holds the names), then `replication_sentence` of `agreement` (`replication`).
    Its n is the range of the n behind `second`'s verdicts ("100–250" where a deciding
    rival is a heavy method, run on fewer images)."""

    def said(name: str) -> str:
        rows = checks[checks["claim"] == name]
        if rows.empty:
            return "without rows yet"
        by_word: dict[str, list[str]] = {}
        for metric, word in zip(rows["metric"], rows["verdict"], strict=True):
            by_word.setdefault(str(word), []).append(str(metric))
        return ", ".join(f"{word} in {join_words(metrics)}" for word, metrics in by_word.items())

    photos = checks.loc[(checks["claim"] == second) & (checks["n"] > 0), "n"]
    count = f" (n = {format_count_range(photos)})" if len(photos) else ""
    return (f"On a second network, {second}{count}, Table I's claim is {said(second)}; on "
            f"{first}, {said(first)}. " + replication_sentence(agreement, first, second))


def conclusion(verdicts: pd.DataFrame, *, model: str, layer: str, images: str,
               more: Sequence[str] = ()) -> str:
    """The landing page's opening, in a few sentences, from `claim_verdicts`: what was
    tested (the claims, on `model` at `layer`, with `images`, e.g. "250 photos"), then
    which claims held (confirmed on every metric) and which were refuted, each refuted one
    with the metrics that refute it (unless it is a claim of one metric) and, for the first,
    its deciding rival's difference, interval and n; then the claims not decided, and those
    without rows yet. Every verdict sentence names the model and the layer. `more`: further
    lines, each its own paragraph (the verdict by layer, the replication on another
    network)."""
    needed = {"claim", "metric", "verdict", "n", "evidence"}
    if not needed <= set(verdicts.columns):
        raise FdcamError("conclusion needs a claim_verdicts result (columns "
                         f"{', '.join(sorted(needed))})")
    shorts = {claim.claim: claim.short or claim.claim for claim in CLAIMS}
    held, refuted, open_, empty = [], [], [], []
    for claim, rows in verdicts.groupby("claim", sort=False):
        name = shorts.get(str(claim), str(claim))
        words = rows["verdict"]
        if (words == "confirmed").all():
            held.append(name)
        elif (words == "refuted").any():
            against = rows[words == "refuted"]
            first = against.iloc[0]
            evidence = f"deciding rival {first['evidence']}, n = {int(first['n'])}"
            if len(rows) == 1:  # a claim of one metric names it itself
                refuted.append(f"{name}: {evidence}")
            else:
                metrics = [METRIC_NAMES.get(str(m), str(m)) for m in against["metric"]]
                lead = f"{metrics[0]}: " if len(metrics) > 1 else ""
                refuted.append(f"{name}, in {' and '.join(metrics)} ({lead}{evidence})")
        elif (words == "no data").all():
            empty.append(name)
        else:
            open_.append(name)
    count = len(held) + len(refuted) + len(open_) + len(empty)
    where = f"{model} at `{layer}`"
    text = [f"This run tested {count} claims of the paper on {where}, with {images}."]
    verdict = (f"On {where}, confirmed on every metric: " + "; ".join(held) if held
               else f"On {where}, no claim was confirmed on every metric")
    if refuted:
        verdict += "; refuted: " + "; ".join(refuted)
    text.append(verdict + ".")
    if open_:
        text.append(f"Not decided on {where} (an interval that contains zero, or too few "
                    "images): " + "; ".join(open_) + ".")
    if empty:
        text.append("No rows yet: " + "; ".join(empty) + ".")
    # Each further line (by layer, replication) a paragraph of its own: the opening reads
    # as the verdict first, then how it moves.
    return "\n\n".join([" ".join(text), *(line for line in more if line)])


def _metric_name(metric: str) -> str:
    return metric.replace("hit", "pointing_game")


def _shared_images(df: pd.DataFrame, method: str, rival: str) -> int:
    """How many images both methods have a row on."""
    mine = set(df.loc[df["method"] == method, "image"])
    return len(mine & set(df.loc[df["method"] == rival, "image"]))


METRIC_NAMES = {
    "insertion": "insertion",
    "deletion": "deletion",
    "overall": "overall",
    "pointing_game": "pointing game",
    "pointing_game_tol15": "original pointing game (15 px)",
}
"""How the findings name each metric in prose."""


def _places(metric: str) -> int:
    """Decimals of a metric as its tables print it: 1 for the pointing game (percent)."""
    return 1 if str(metric).startswith("pointing_game") else 3


def findings(table: pd.DataFrame, paired: pd.DataFrame | None = None) -> str:
    """What a table says, in a few lines: per metric, the best method by our numbers and
    FD-CAM's rank by ours and by the paper's; how often the paper's value lies in our 95 %
    interval; which methods rest on fewer images (heavy methods); and which paired
    differences with FD-CAM (`paired_vs_fdcam`) exclude zero.

    Numbers are rounded as the tables print them (3 decimals, the pointing game's percent 1),
    so the text is bit-stable across reruns (nbval) and quotes what the tables show.
    """
    order = ranks(table)
    lines = []
    for metric in dict.fromkeys(table["metric"]):
        name = METRIC_NAMES.get(metric, metric)
        ours = order[f"{metric} ours"]
        ranked = ours.dropna()
        if ranked.empty:
            lines.append(f"{name}: no numbers yet")
            continue
        sizes = table[table["metric"] == metric].groupby("label")["n"].max()
        full = int(sizes.max()) if len(sizes) else 0
        best = ", ".join(
            label + (f" (on {int(sizes[label])} of {full})" if label in sizes
                     and int(sizes[label]) < full else "")
            for label in ranked[ranked == ranked.min()].index)
        fd_label = method_label("fdcam")
        fd = ours.get(fd_label, pd.NA)
        fd_paper = order[f"{metric} paper"].get(fd_label, pd.NA)
        fd_text = "n/a" if pd.isna(fd) else f"{int(fd)} of {len(ranked)}"
        paper_text = "" if pd.isna(fd_paper) else f" (paper: {int(fd_paper)})"
        lines.append(f"{name}: best {best}; FD-CAM rank {fd_text}{paper_text}")
    sizes = table.groupby("label", sort=False)["n"].max()
    unit = "pairs" if "pointing_game" in set(table["metric"]) else "images"
    missing = sizes[sizes == 0]
    if len(missing):
        lines.append(f"no {unit} yet for " + ", ".join(missing.index)
                     + ": the table and the paired differences leave them out")
    fewer = sizes[(sizes < sizes.max()) & (sizes > 0)]
    if len(fewer):
        lines.append(f"not every method on the same {unit}: " + ", ".join(
            f"{label} {int(n)}" for label, n in fewer.items())
            + f" (the others {int(sizes.max())}); compare them with FD-CAM through the "
              f"paired differences, which use the shared {unit} only")
    known = table["paper_in_ci"].dropna()
    if len(known):
        # Table IV's label row is held against the paper's third row, printed once.
        borrowed = int(table.loc[known.index, "paper"].isna().sum()) if "paper" in table \
            else 0
        lines.append(f"paper's value inside our 95 % CI: {int(known.sum())} of {len(known)}"
                     + (f" ({borrowed} of them compare a row with the paper's value printed "
                        f"on another row)" if borrowed else ""))
    if paired is not None and len(paired):
        lower = paired["metric"] == "deletion"
        significant = (paired["ci_low"] > 0) | (paired["ci_high"] < 0)
        rows = paired[significant]
        if rows.empty:
            lines.append("paired differences with FD-CAM whose 95 % CI excludes 0: none")
        else:
            lines.append("paired differences with FD-CAM whose 95 % CI excludes 0:")
            for row, is_lower in zip(rows.itertuples(index=False), lower[significant],
                                     strict=True):
                fd_better = (row.mean_difference > 0) if is_lower else (row.mean_difference < 0)
                quoted = format_difference(row.mean_difference, row.ci_low, row.ci_high,
                                           _places(row.metric))
                lines.append(f"  {row.label} {METRIC_NAMES.get(row.metric, row.metric)}: "
                             f"{quoted}"
                             ", FD-CAM "
                             f"{'better' if fd_better else 'worse'}")
    return "\n".join(lines)
