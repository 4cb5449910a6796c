"""The programs behind the Makefile, run from the repository root as ``python -m scripts.X``:
the notebook runner, ``make reproduce``, the stand-in data sets, the benchmarks, ``make
readme`` and the imagenet-sample evaluation. Not installed: ``pip install fdcam`` ships the
package a user imports, and these import it."""
