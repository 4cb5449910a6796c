"""The paper's pipeline: what the notebooks (and ``make reproduce``) call; needs ``[book]``.

* `settings` — what each profile runs (methods per table, sizes, limits); `names` — the
  paper's vocabulary (profiles, tables, metrics, method labels); `parameters` — the
  notebooks' parameter checks;
* `setups` (offline, smoke) and `disk_setups` (imagenet-sample, paper) — one `Setup` per
  profile: models, images, methods (`setup_types`: the `Setup` itself and what both share);
* `runs` — the resumable faithfulness and pointing runs behind the tables; `figure_cache`
  and `figure_data` — the maps and curves of Figs. 5 and 6;
* `paper_tables` (the paper's numbers), `tables` (Tables I–IV, ours beside the paper's),
  `report` (the tables as the reader sees them), `verdicts` (the claims and the findings
  prose), `ablations` (chapter 07's checks);
* `plots` — the figures; `figure_choice` and `figure_findings` — which images Figs. 1 and 4
  explain, and the sentences that say what they show; `grouped_switching` — chapter 02's
  helpers beside Eq. 6–8 (the mask census, grouped scores of a linear head);
* `finetune` — VGG16 on VOC2007 for Table II; `layer_survey` — the imagenet-sample
  profile's choice of layer.

A chapter's checks live in a module named for what it checks (`ablations` for chapter 07).
"""
