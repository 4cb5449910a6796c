"""The paper's two protocols (§IV) and what runs them; needs the ``[evaluation]`` extra.

* `fdcam.evaluation.faithfulness` — RISE's insertion and deletion curves and AUCs (§IV-B);
* `fdcam.evaluation.pointing` — the pointing game, the paper's and the original (§IV-C);
* `fdcam.evaluation.runner` — `evaluate`: every image × method into a results file,
  resumable, sharded, failures as rows;
* `fdcam.evaluation.results`, `fdcam.evaluation.results_file` — the file's format and its
  safe reading, writing and merging;
* `fdcam.evaluation.statistics` — means and paired differences with bootstrap intervals;
* `fdcam.evaluation.cli` — ``fdcam evaluate``;
* data sets: `images` (reading a file), `photos` (the offline profile's package photos and
  mosaics), `imagenet` (ILSVRC2012 val, imagenet-sample), `voc` (VOC2007, the one box
  conversion); `overlay` (the map blended onto the image).

A new metric is one file here and its columns in `fdcam.evaluation.results`.
"""
