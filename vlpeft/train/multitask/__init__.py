"""Multi-task training of the encoder-decoder in the VL-Adapter setting (VQA, GQA, NLVR2, COCO captions).

``plan`` is VL-Adapter's batch plan (every batch of every task once per epoch, in a seeded order), ``tasks``
the per-task bindings (data, loss, validation, test predictions), ``data`` the loop-facing ``TrainData``.
"""
