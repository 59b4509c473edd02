"""faceindex face pipeline: decode, detect, align, embed, compare.

Importing ``ml`` is cheap: heavy modules (OpenCV models, onnxruntime) load only
when a pipeline is built. Never imports Django.

    from ml.decode import decode_image
    from ml.pipeline import FacePipeline
    from ml.compare import cosine_similarity
"""
