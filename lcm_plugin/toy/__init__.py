"""The toy world: a procedural captioned-image world with known ground truth, a small real Stable Diffusion
teacher trained on it (shipped in ``assets/``), a frozen judge (FD / KID features + attribute checker) and an
evaluation harness, so LCM sampling and distillation can be measured on a CPU with no downloads.

Public entry points:

- :mod:`lcm_plugin.toy.world` -- ``WorldConfig``, ``sample``, ``iterate``, ``make_arrays`` (images + captions).
- :mod:`lcm_plugin.toy.data` -- ``ToyDataset`` (pixel_values in [-1, 1] + text) and ``teacher_path()``.
- :mod:`lcm_plugin.toy.models` -- ``load_pipeline(path)`` (any diffusers SD folder, offline).
- :mod:`lcm_plugin.toy.evaluate` -- ``Sampler``, ``EvalConfig``, ``evaluate_samplers``, ``standard_samplers``,
  ``lcm_sampler``; :mod:`lcm_plugin.toy.report` -- Markdown tables and PNG charts/grids.
- :mod:`lcm_plugin.toy.judge` -- ``load_judge``, ``adherence``, ``JudgeFeatures``.
"""
