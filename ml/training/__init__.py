"""Training and fine-tuning of face recognizers (torch; never imported by ``ml`` itself).

    python -m ml.train --data DIR --backbone facenet --loss arcface --freeze L34+fc --epochs 10 --out runs/x
    python -m ml.study --data DIR --backbone facenet --epochs 5 --out runs/study
    python -m ml.training.export --run runs/x --out weights/trained/my-model.onnx

Modules: ``losses`` (combined margin), ``partial_fc``, ``backbones`` (registry:
facenet, iresnet50, iresnet_tiny, mobilefacenet), ``data`` (folder-per-identity,
alignment cache through ``ml``'s pipeline, splits), ``augment``, ``freeze``,
``metrics``, ``train``, ``study`` and ``export`` (its ONNX files run in
``ml.recognizers.onnx``).
"""
