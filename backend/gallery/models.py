from django.conf import settings
from django.db import models
from pgvector.django import HalfVectorField, HnswIndex

# The default recognizer (SFace, weights/manifest.toml) emits 128-d vectors.
# A recognizer of another width needs a migration of these columns.
EMBEDDING_DIM = 128
# Embeddings are stored in half precision: half the table and two thirds of
# the index size of float32 (more of a large gallery stays in memory), and a
# cosine similarity moves by <= 0.00016 (README "Gallery scale"). Probes are
# cast to the same type (EMBEDDING_SQL_TYPE) so the queries use the HNSW index.
EMBEDDING_SQL_TYPE = f"halfvec({EMBEDDING_DIM})"
# HNSW graph: ef_construction 128 reaches recall@1 >= 0.99 against exact search
# at 1M faces with hnsw.ef_search 100 (FACEINDEX_HNSW_EF_SEARCH); 64 did not.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
HNSW_OPCLASS = "halfvec_cosine_ops"


class Identity(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="identities")
    name = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        verbose_name_plural = "identities"

    def __str__(self) -> str:
        return self.name


class Template(models.Model):
    """An enrollment embedding: the gallery that faces are matched against."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="templates")
    identity = models.ForeignKey(Identity, on_delete=models.CASCADE, related_name="templates")
    embedding = HalfVectorField(dimensions=EMBEDDING_DIM)
    crop_key = models.CharField(max_length=512, blank=True)
    source_key = models.CharField(max_length=512, blank=True)
    source_face = models.ForeignKey("Face", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    quality = models.FloatField(default=0.0)
    # A synthetic-masked copy of an enrollment face: searched only for probes
    # the mask classifier calls masked (bare probes would gain false matches).
    masked = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            HnswIndex(
                name="template_embedding_hnsw",
                fields=["embedding"],
                m=HNSW_M,
                ef_construction=HNSW_EF_CONSTRUCTION,
                opclasses=[HNSW_OPCLASS],
            )
        ]


class MaskState(models.TextChoices):
    NO_MASK = "no_mask"
    MASK = "mask"
    MASK_INCORRECT = "mask_incorrect"


class Face(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="faces")
    image = models.ForeignKey("jobs.Image", on_delete=models.CASCADE, related_name="faces")
    # Position of the face in the detector's output, so re-processing an image
    # replaces its faces instead of adding copies.
    ordinal = models.PositiveIntegerField()
    box_x = models.FloatField()
    box_y = models.FloatField()
    box_w = models.FloatField()
    box_h = models.FloatField()
    landmarks = models.JSONField()
    det_score = models.FloatField()
    quality = models.FloatField(default=0.0)
    embedding = HalfVectorField(dimensions=EMBEDDING_DIM)
    identity = models.ForeignKey(Identity, null=True, blank=True, on_delete=models.SET_NULL, related_name="faces")
    similarity = models.FloatField(null=True, blank=True)
    # A user put this face on its identity (move, enroll, named cluster):
    # background re-matching leaves it alone.
    identity_locked = models.BooleanField(default=False)
    # When a user last decided this face's identity (move, "not this person",
    # enroll, named cluster): undoing an older merge leaves the decision alone.
    placed_at = models.DateTimeField(null=True, blank=True)
    # Drawn by a user around a face the detector missed (det_score may be 0).
    manual = models.BooleanField(default=False)
    # Unknown faces only: the group of look-alike unknown faces it belongs to.
    cluster = models.ForeignKey("UnknownCluster", null=True, blank=True, on_delete=models.SET_NULL, related_name="faces")
    # Whether clustering has considered this unknown face since it became
    # unknown; clustering.cluster_pending picks up the rest.
    cluster_checked = models.BooleanField(default=False)
    mask_state = models.CharField(max_length=16, choices=MaskState.choices, blank=True, db_index=True)
    mask_score = models.FloatField(null=True, blank=True)
    # Age and sex are estimated only when a job asks for them (privacy).
    age = models.FloatField(null=True, blank=True)
    sex = models.CharField(max_length=8, blank=True)
    sex_score = models.FloatField(null=True, blank=True)
    crop_key = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["image_id", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["image", "ordinal"], name="unique_face_ordinal_per_image")]
        indexes = [
            HnswIndex(
                name="face_embedding_hnsw",
                fields=["embedding"],
                m=HNSW_M,
                ef_construction=HNSW_EF_CONSTRUCTION,
                opclasses=[HNSW_OPCLASS],
            ),
            models.Index(fields=["owner", "identity"]),
            models.Index(fields=["owner", "cluster"]),
            models.Index(fields=["owner", "cluster_checked"], condition=models.Q(identity__isnull=True, cluster_checked=False),
                         name="face_cluster_pending"),
        ]

    @property
    def box(self) -> list[float]:
        return [self.box_x, self.box_y, self.box_w, self.box_h]


class Rejection(models.Model):
    """A user's "not this person": the face must never match this identity."""

    face = models.ForeignKey(Face, on_delete=models.CASCADE, related_name="rejections")
    identity = models.ForeignKey(Identity, on_delete=models.CASCADE, related_name="rejections")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["face", "identity"], name="unique_rejection")]


class Merge(models.Model):
    """One merge of `source` into `target`, with what moved, so it can be undone exactly.

    The source identity row is deleted by the merge; its fields are kept here
    and an undo re-creates it with the same primary key.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="merges")
    target = models.ForeignKey(Identity, on_delete=models.CASCADE, related_name="merges_in")
    source_id = models.BigIntegerField()
    source_name = models.CharField(max_length=255)
    source_created_at = models.DateTimeField()
    source_updated_at = models.DateTimeField()
    template_ids = models.JSONField(default=list)
    # Rejections ("not source") that became "not target": [id, ...]; those
    # the target already had are dropped and kept as [[face_id, created_at], ...].
    rejection_ids = models.JSONField(default=list)
    dropped_rejections = models.JSONField(default=list)
    # Earlier merges into the source, re-pointed at the target: [merge id, ...].
    merge_ids = models.JSONField(default=list)
    # Every face the merge changed: {face_id: [identity_id, similarity, identity_locked, cluster_id]} before.
    face_states = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.source_name} (#{self.source_id}) into {self.target}"


class UnknownCluster(models.Model):
    """Unknown faces that look alike (see gallery/clustering.py); naming it makes an identity."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="unknown_clusters")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return f"unknown cluster {self.pk}"


class EmbeddingSpace(models.Model):
    """Which recognizer made the vectors in this database (a single row).

    Embeddings of two recognizers are not comparable even at the same width;
    a process configured with another recognizer refuses to start rather than
    silently mixing them (backend.core.pipeline).
    """

    recognizer_id = models.CharField(max_length=128)
    embedding_dim = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.recognizer_id} ({self.embedding_dim}-d)"


class Enrollment(models.Model):
    """An enrollment too large for one request (FACEINDEX_ENROLL_SYNC_MAX_FILES): run by a worker.

    ``files`` are the uploaded images as stored in object storage ({"name", "key",
    "sha256"}); ``results`` grows by one entry per file processed, so progress is
    ``len(results) / len(files)`` and a re-run (after an outage) resumes there.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="enrollments")
    identity = models.ForeignKey(Identity, on_delete=models.CASCADE, related_name="enrollments")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    files = models.JSONField(default=list)
    results = models.JSONField(default=list)
    # Unset while its task was never handed to the broker (the outbox sweep sends it).
    queued_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    @property
    def enrolled(self) -> int:
        return sum(1 for result in self.results if result.get("template_id"))


class MatchingPolicy(models.Model):
    """An owner's open-set matching target; without a row the deployment's FACEINDEX_TARGET_FPIR applies."""

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="matching_policy")
    # Share of never-enrolled people's faces that may be named as someone.
    target_fpir = models.FloatField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "matching policies"
