"""Training: the task-agnostic loop, checkpoint + exact resume, DDP, the VQA/caption bindings, prediction.

Public API (import the submodules directly; this package imports nothing heavy so ``vlpeft --help`` stays
fast):

- ``vlpeft.train.run.train_task(params, task, data_root, features_dir, out_dir, tracker=None, resume=False,
  report=None, *, evaluate_test=True, progress=True) -> dict`` — the contract "Trainer"; output layout in
  ``vlpeft.train.run``.
- ``vlpeft.train.predict.Predictor.load(model_dir)`` with ``.answer(image, question)``, ``.caption(image)``
  and the batched ``.answers(images, questions)``, ``.captions(images)``.
- ``vlpeft.train.loop.fit(model, data, cfg, out_dir, *, validate, ...)`` — the loop for any model whose
  ``model(**batch)`` returns ``.loss``; ``data`` has ``__len__``, ``batch(indices)`` and ``units(batch)``.

Modules: ``loop`` (fit), ``batches`` (per-step micro-batches, prefetch thread), ``sampler`` (seeded order,
sharding), ``optim`` (AdamW groups, warm-up + decay), ``checkpoint`` / ``state`` (safetensors + JSON, atomic
directories, RNG), ``distributed`` (torchrun), ``tasks`` / ``inputs`` / ``cider`` (task bindings), ``run``,
``predict``.
"""
