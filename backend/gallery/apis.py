from django.db.models import Count
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.core.pagination import Pagination
from backend.core.uploads import uploads_from_request
from backend.reports import selectors as report_selectors

from . import services
from .models import Face, Identity
from .serializers import FaceSerializer, IdentityInputSerializer, IdentitySerializer


class IdentityListApi(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(responses=IdentitySerializer(many=True))
    def get(self, request):
        identities = Identity.objects.filter(owner=request.user).annotate(
            template_count=Count("templates", distinct=True), face_count=Count("faces", distinct=True)
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


class IdentityEnrollApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}})
    def post(self, request, identity_id: int):
        identity = services.get_identity(owner=request.user, identity_id=identity_id)
        summary = services.enroll_from_uploads(identity=identity, uploads=uploads_from_request(request))
        body = {
            "identity": IdentitySerializer(identity).data,
            "enrolled": summary.enrolled,
            "results": [
                {"name": r.name, "template_id": r.template_id, "faces_found": r.faces_found, "error": r.error}
                for r in summary.results
            ],
        }
        code = status.HTTP_201_CREATED if summary.enrolled else status.HTTP_422_UNPROCESSABLE_ENTITY
        if not summary.enrolled:
            first = next((r.error for r in summary.results if r.error), {"code": "no_face", "message": "nothing enrolled"})
            body["error"] = {"code": first["code"], "message": f"no image could be enrolled: {first['message']}", "field": "files"}
        return Response(body, status=code)


class IdentityFacesApi(APIView):
    @extend_schema(responses=FaceSerializer(many=True))
    def get(self, request, identity_id: int):
        identity = services.get_identity(owner=request.user, identity_id=identity_id)
        faces = Face.objects.filter(owner=request.user, identity=identity).select_related("identity", "image")
        paginator = Pagination()
        page = paginator.paginate_queryset(faces.order_by("id"), request, view=self)
        return paginator.get_paginated_response(FaceSerializer(page, many=True).data)


class IdentityReportApi(APIView):
    def get(self, request, identity_id: int):
        identity = services.get_identity(owner=request.user, identity_id=identity_id)
        report = report_selectors.identity_report(owner=request.user, identity=identity, with_urls=True)
        row = report["identities"][0] if report["identities"] else {
            "identity_id": identity.pk, "name": identity.name, "appearances": 0, "images": 0, "mean_similarity": None, "faces": []}
        return Response(row)
