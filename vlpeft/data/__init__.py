"""Datasets in the real formats: the embedded shapes world, real COCO/VQAv2, loaders and answer vocabulary.

Public entry points (import the submodules directly; this package imports nothing heavy):

- ``synth.generate_world(cfg, out, seed)``: the synthetic world in the data layout (``formats.py``).
- ``download.fetch`` / ``download.download_group`` and ``prepare.prepare_coco``: real COCO 2014 + VQAv2.
- ``coco.load_captions(root, split)``, ``vqa.load_vqa(root, split)``, ``images.image_table(root)``,
  ``images.load_image(path)``: loaders shared by synthetic and real data.
- ``vocab.AnswerVocab``: answer classes and official VQA soft scores.
- ``scenes.attribute_labels(scene)`` / ``scenes.attribute_names()``: ViT pretraining targets.
"""
