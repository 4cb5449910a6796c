"""A stage-2-sized evaluation once per engine: wall time per engine, its ratio to eager, and
the largest AUC difference between engines.

    python -m scripts.bench_stage [--photos DIR] [--n 20] [--layer L] [--threads 1]
                                  [--engines old,auto]

Stage 2 of ``make evaluate-imagenet-sample`` runs Table I/III/IV's light methods (10 of them:
every method but Score-CAM and Ablation-CAM; ``fdcam-exp-shifted`` is ``fdcam-exp``'s map) on
photos. Here the first `--n` photos of the profile's seeded order are evaluated with each
engine into a temporary results folder of its own, one engine after the other, each as one
run (compiling once, as a stage does): run it on an otherwise idle machine. An engine is one
of `fdcam.evaluation.engine.ENGINES`, with FD-CAM's variants sharing each image's switching
(`fdcam.switching_memo`), or ``old``: eager, each variant switching on its own, as the runs
before the engine and the memo. The maps are the same up to rounding; the protocol's
forward passes differ, and how often FD-CAM's switching is computed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fdcam.evaluation.results_file import read_results
from fdcam.paper import runs, settings, setups

METRICS = ("insertion", "deletion", "overall")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default=None)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--layer", default=settings.SAMPLE_LAYER)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--engines", default="old,auto")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engines = args.engines.split(",")
    seconds = dict.fromkeys(engines, 0.0)
    with tempfile.TemporaryDirectory(prefix="fdcam-bench-stage-") as tmp:
        for engine in engines:
            made = setups.setup("imagenet-sample", imagenet_sample=args.photos,
                                layer=args.layer, n_images=args.n,
                                results_dir=Path(tmp) / engine, run_missing=True)
            light = [m for m in made.faithfulness_methods if m not in made.heavy_methods]
            start = time.perf_counter()
            runs.run_faithfulness(made, light, engine="eager" if engine == "old" else engine,
                                  share_switching=engine != "old")
            seconds[engine] = time.perf_counter() - start
            print(f"{engine}: {seconds[engine]:.0f} s", flush=True)
        tables = {e: read_results(Path(tmp) / e / "faithfulness.csv")
                  .set_index(["image", "method", "target"]).sort_index() for e in engines}
    base = engines[0]
    rows = len(tables[base])
    print(f"\n{args.n} photos x {rows // args.n} methods at {args.layer}, "
          f"{args.threads} thread(s); seconds include the maps")
    print(f"{'engine':<12} {'seconds':>8} {'vs ' + base:>9} {'max |dAUC|':>11}")
    for engine in engines:
        diff = (tables[engine][list(METRICS)] - tables[base][list(METRICS)]).abs().max().max()
        print(f"{engine:<12} {seconds[engine]:>8.0f} {seconds[base] / seconds[engine]:>8.2f}x "
              f"{diff:>11.1e}")


if __name__ == "__main__":
    main()
