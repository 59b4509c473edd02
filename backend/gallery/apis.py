from django.db.models import Count, Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.core.errors import NotFound, ServiceError
from backend.core.pagination import PAGE_PARAMETERS, Pagination, paginated
from backend.core.uploads import Upload, uploads_from_request

from . import clustering, merging, naming, search, selectors, services
from .models import Enrollment, Face, Identity, Merge
from .serializers import (
    AssignInputSerializer, ClusterSerializer, EnrollmentSerializer, FaceIdsSerializer, FaceSerializer, IdentityInputSerializer, IdentitySerializer, MergeInputSerializer,
    MergeSerializer, NameClusterInputSerializer, OptionalIdentitySerializer, TagFaceInputSerializer, TemplateSerializer,
)


class IdentityListApi(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(responses=paginated(IdentitySerializer), parameters=PAGE_PARAMETERS)
    def get(self, request):
        identities = Identity.objects.filter(owner=request.user).annotate(
            template_count=Count("templates", filter=Q(templates__masked=False), distinct=True), face_count=Count("faces", distinct=True)
        ).order_by("name", "id")
        if request.query_params.get("search"):
            identities = identities.filter(name__icontains=request.query_params["search"])
        paginator = Pagination()
        page = paginator.paginate_queryset(identities, request, view=self)
        return paginator.get_paginated_response(IdentitySerializer(page, many=True).data)

    @extend_schema(request=IdentityInputSerializer, responses={201: IdentitySerializer})
    def post(self, request):
        data = IdentityInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        identity = services.create_identity(owner=request.user, name=data.validated_data["name"])
        return Response(IdentitySerializer(identity).data, status=status.HTTP_201_CREATED)


class IdentityDetailApi(APIView):
    @extend_schema(responses=IdentitySerializer)
    def get(self, request, identity_id: int):
        return Response(IdentitySerializer(services.get_identity(owner=request.user, identity_id=identity_id)).data)

    @extend_schema(request=IdentityInputSerializer, responses=IdentitySerializer)
    def patch(self, request, identity_id: int):
        identity = services.get_identity(owner=request.user, identity_id=identity_id)
        data = IdentityInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(IdentitySerializer(services.rename_identity(identity=identity, name=data.validated_data["name"])).data)

    def delete(self, request, identity_id: int):
        """Delete with purge of templates and their crops; ?purge_faces=true also deletes its faces and crops."""
        identity = services.get_identity(owner=request.user, identity_id=identity_id)
        purge_faces = request.query_params.get("purge_faces", "false").lower() == "true"
        return Response(services.delete_identity(identity=identity, purge_faces=purge_faces))


class IdentityEnrollApi(APIView):
    throttle_scope = "enroll"
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "box": {"type": "string", "description": "x,y,width,height of the face to enroll (one photo only)"}}}},
        responses={201: OpenApiTypes.OBJECT, 202: EnrollmentSerializer, 422: OpenApiTypes.OBJECT})
    def post(self, request, identity_id: int):
        """Enroll each photo's subject (the clearly largest face); other faces are ignored and listed.

        A photo with no dominant face is refused with code no_dominant_face and
        the boxes found; send it again with one of them as ``box``.
        """
        identity = services.get_identity(owner=request.user, identity_id=identity_id)
        summary = services.enroll(identity=identity, uploads=uploads_from_request(request), box=request.data.get("box"))
        if isinstance(summary, Enrollment):  # too many images for one request: a worker enrolls them
            return Response(EnrollmentSerializer(summary).data, status=status.HTTP_202_ACCEPTED,
                            headers={"Location": f"/api/v1/enrollments/{summary.pk}"})
        body = {
            "identity": IdentitySerializer(identity).data,
            "enrolled": summary.enrolled,
            "results": [
                {"name": r.name, "template_id": r.template_id, "faces_found": r.faces_found, "box": r.box,
                 "ignored_boxes": r.ignored_boxes, "error": r.error}
                for r in summary.results
            ],
        }
        code = status.HTTP_201_CREATED if summary.enrolled else status.HTTP_422_UNPROCESSABLE_ENTITY
        if not summary.enrolled:
            first = next((r.error for r in summary.results if r.error), {"code": "no_face", "message": "nothing enrolled"})
            body["error"] = {"code": first["code"], "message": f"no image could be enrolled: {first['message']}",
                             "field": first.get("field", "files")}
        return Response(body, status=code)


class EnrollmentDetailApi(APIView):
    """Progress of a background enrollment (POST .../enroll with many images answers 202 with one)."""

    @extend_schema(responses=EnrollmentSerializer)
    def get(self, request, enrollment_id: int):
        enrollment = Enrollment.objects.filter(owner=request.user, pk=enrollment_id).first()
        if enrollment is None:
            raise NotFound("not_found", f"enrollment {enrollment_id} not found")
        return Response(EnrollmentSerializer(enrollment).data)


class IdentityFacesApi(APIView):
    @extend_schema(responses=paginated(FaceSerializer), parameters=PAGE_PARAMETERS)
    def get(self, request, identity_id: int):
        identity = services.get_identity(owner=request.user, identity_id=identity_id)
        faces = Face.objects.filter(owner=request.user, identity=identity).select_related("identity", "image")
        paginator = Pagination()
        page = paginator.paginate_queryset(faces.order_by("id"), request, view=self)
        return paginator.get_paginated_response(FaceSerializer(page, many=True).data)


class IdentityTemplateListApi(APIView):
    @extend_schema(responses=paginated(TemplateSerializer), parameters=PAGE_PARAMETERS)
    def get(self, request, identity_id: int):
        """The identity's templates (enrolled photos and confirmed faces), oldest first."""
        identity = services.get_identity(owner=request.user, identity_id=identity_id)
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.identity_templates(identity), request, view=self)
        return paginator.get_paginated_response(TemplateSerializer(page, many=True).data)


class IdentityTemplateDetailApi(APIView):
    @extend_schema(responses=TemplateSerializer)
    def get(self, request, identity_id: int, template_id: int):
        identity = services.get_identity(owner=request.user, identity_id=identity_id)
        return Response(TemplateSerializer(services.get_template(identity=identity, template_id=template_id)).data)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def delete(self, request, identity_id: int, template_id: int):
        """Delete one template; the faces named through it are matched again by the same rule (background)."""
        identity = services.get_identity(owner=request.user, identity_id=identity_id)
        return Response(services.delete_template(identity=identity, template_id=template_id))


class IdentityEnrollFacesApi(APIView):
    @extend_schema(request=FaceIdsSerializer)
    def post(self, request, identity_id: int):
        identity = services.get_identity(owner=request.user, identity_id=identity_id)
        data = FaceIdsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        templates = services.enroll_from_faces(identity=identity, face_ids=data.validated_data["face_ids"])
        return Response({"identity": IdentitySerializer(identity).data, "template_ids": [t.pk for t in templates]},
                        status=status.HTTP_201_CREATED)


class IdentityMergeApi(APIView):
    """Merge identity `source_id` into this one."""

    @extend_schema(request=MergeInputSerializer, responses={201: MergeSerializer})
    def post(self, request, identity_id: int):
        data = MergeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        merge = merging.merge_identities(owner=request.user, target_id=identity_id, source_id=data.validated_data["source_id"])
        return Response(MergeSerializer(merge).data, status=status.HTTP_201_CREATED)


class MergeListApi(APIView):
    @extend_schema(responses=paginated(MergeSerializer), parameters=PAGE_PARAMETERS)
    def get(self, request):
        merges = Merge.objects.filter(owner=request.user).select_related("target")
        paginator = Pagination()
        page = paginator.paginate_queryset(merges, request, view=self)
        return paginator.get_paginated_response(MergeSerializer(page, many=True).data)


class MergeUndoApi(APIView):
    @extend_schema(request=None, responses=IdentitySerializer)
    def post(self, request, merge_id: int):
        identity = merging.undo_merge(owner=request.user, merge_id=merge_id)
        return Response(IdentitySerializer(identity).data)


class FaceAssignApi(APIView):
    """Move a face to an identity (identity_id), or null for "not its current identity"."""

    @extend_schema(request=AssignInputSerializer, responses=FaceSerializer)
    def post(self, request, face_id: int):
        data = AssignInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if "identity_id" not in data.validated_data:
            raise ServiceError("invalid", "identity_id is required (null for unknown)", field="identity_id")
        face = services.assign_face(owner=request.user, face_id=face_id, identity_id=data.validated_data["identity_id"],
                                    as_template=data.validated_data["template"])
        return Response(FaceSerializer(Face.objects.select_related("identity", "image").get(pk=face.pk)).data)


class FaceRejectApi(APIView):
    """"Not this person" for identity_id (default: the face's current identity)."""

    @extend_schema(request=OptionalIdentitySerializer, responses=FaceSerializer)
    def post(self, request, face_id: int):
        data = OptionalIdentitySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        face = services.reject_face(owner=request.user, face_id=face_id, identity_id=data.validated_data.get("identity_id"))
        return Response(FaceSerializer(Face.objects.select_related("identity", "image").get(pk=face.pk)).data)


class ImageTagFaceApi(APIView):
    """Tag a face the detector missed: a box [x, y, w, h] in the image's (EXIF-upright) pixels."""

    @extend_schema(request=TagFaceInputSerializer, responses={201: FaceSerializer})
    def post(self, request, image_id: int):
        data = TagFaceInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        face = services.tag_face(owner=request.user, image_id=image_id, box=data.validated_data["box"],
                                 identity_id=data.validated_data.get("identity_id"))
        return Response(FaceSerializer(Face.objects.select_related("identity", "image").get(pk=face.pk)).data,
                        status=status.HTTP_201_CREATED)


def _one_upload(request, field: str, *, required: bool = True) -> Upload | None:
    f = request.FILES.get(field)
    if f is None:
        if required:
            raise ServiceError("no_files", f"send an image as multipart field '{field}'", field=field)
        return None
    return Upload(f.name, f, f.size)


class VerifyApi(APIView):
    """1:1: file_a vs file_b, or file_a vs identity_id."""
    throttle_scope = "verify"

    parser_classes = [MultiPartParser, FormParser]

    def post(self, request):
        identity_id = request.data.get("identity_id")
        try:
            identity_id = int(identity_id) if identity_id not in (None, "") else None
        except ValueError:
            raise ServiceError("invalid", "identity_id must be an integer", field="identity_id")
        return Response(search.verify(owner=request.user, probe=_one_upload(request, "file_a"),
                                      other=_one_upload(request, "file_b", required=False), identity_id=identity_id))


class SearchApi(APIView):
    """1:N: file (largest face, or faces=all) -> top-k identities and faces."""
    throttle_scope = "search"

    parser_classes = [MultiPartParser, FormParser]

    def post(self, request):
        try:
            k = int(request.data.get("k", 5))
        except ValueError:
            raise ServiceError("invalid", "k must be an integer", field="k")
        which = request.data.get("faces", "largest")
        if which not in ("largest", "all"):
            raise ServiceError("invalid", "faces must be 'largest' or 'all'", field="faces")
        return Response(search.search(owner=request.user, probe=_one_upload(request, "file"), k=k, all_faces=which == "all"))


class ClusterListApi(APIView):
    @extend_schema(responses=paginated(ClusterSerializer), parameters=PAGE_PARAMETERS)
    def get(self, request):
        # Catch up on faces no background task has clustered yet (bounded per request).
        clustering.cluster_pending(request.user.pk, limit=500)
        paginator = Pagination()
        page = paginator.paginate_queryset(clustering.clusters_for(request.user), request, view=self)
        return paginator.get_paginated_response(ClusterSerializer(page, many=True).data)


class ClusterDetailApi(APIView):
    def get(self, request, cluster_id: int):
        cluster = clustering.get_cluster(owner=request.user, cluster_id=cluster_id)
        faces = cluster.faces.select_related("identity", "image").order_by("-quality", "id")
        return Response({"id": cluster.pk, "size": faces.count(), "faces": FaceSerializer(faces, many=True).data})


class ClusterNameApi(APIView):
    """Name a cluster: {"name": ...} makes a new identity, {"identity_id": ...} adds it to one."""

    @extend_schema(request=NameClusterInputSerializer, responses={201: IdentitySerializer})
    def post(self, request, cluster_id: int):
        data = NameClusterInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        identity = naming.name_cluster(owner=request.user, cluster_id=cluster_id, **data.validated_data)
        return Response(IdentitySerializer(identity).data, status=status.HTTP_201_CREATED)


class ClusterFaceApi(APIView):
    """DELETE: a face that does not belong with the others leaves the cluster (it stays unknown)."""

    @extend_schema(request=None, responses=FaceSerializer)
    def delete(self, request, cluster_id: int, face_id: int):
        face = clustering.remove_from_cluster(owner=request.user, cluster_id=cluster_id, face_id=face_id)
        return Response(FaceSerializer(Face.objects.select_related("identity", "image").get(pk=face.pk)).data)


class MatchingPolicyApi(APIView):
    def get(self, request):
        """The open-set target FPIR (owner's or deployment's) and the thresholds it gives now."""
        return Response(services.matching_policy(owner=request.user))

    def put(self, request):
        """{"target_fpir": 0.01}, or null to fall back to the deployment's FACEINDEX_TARGET_FPIR."""
        if "target_fpir" not in request.data:
            raise ServiceError("invalid", "give target_fpir (a number, or null)", field="target_fpir")
        return Response(services.set_matching_policy(owner=request.user, target_fpir=request.data["target_fpir"]))
