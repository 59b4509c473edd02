import json

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db.models import Count
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.core.errors import ServiceError
from backend.core.pagination import PAGE_PARAMETERS, Pagination, paginated
from backend.core.params import body_object, id_param
from backend.core.uploads import uploads_from_request
from backend.gallery.matching import low_quality_faces
from backend.gallery.models import Face, MaskState
from backend.gallery.serializers import FaceSerializer

from . import selectors, services
from . import webhooks
from .models import Image, Job, WebhookDelivery
from .serializers import ImageSerializer, JobSerializer, WebhookDeliverySerializer, WebhookEndpointSerializer


def _paginate(view, request, queryset, serializer_class):
    paginator = view.paginator if hasattr(view, "paginator") else None
    paginator = paginator or Pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


def _options(raw) -> dict:
    if not raw:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ServiceError("invalid", f"options must be a JSON object: {exc}", field="options")
    if not isinstance(raw, dict):
        raise ServiceError("invalid", "options must be a JSON object", field="options")
    return raw


def _webhook_url(raw) -> str:
    if not raw:
        return ""
    try:
        URLValidator(schemes=["http", "https"])(raw)
    except ValidationError:
        raise ServiceError("invalid", "webhook_url must be an http(s) URL", field="webhook_url")
    return raw


class JobListApi(APIView):
    throttle_scope = "jobs"  # POST only: listing jobs is not limited
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(responses=paginated(JobSerializer), parameters=PAGE_PARAMETERS)
    def get(self, request):
        return _paginate(self, request, Job.objects.filter(owner=request.user), JobSerializer)

    @extend_schema(request={
        "multipart/form-data": {"type": "object", "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "options": {"type": "string", "description": "JSON object of job options"},
            "webhook_url": {"type": "string", "description": "completion webhook for this job"},
        }},
        "application/json": {"type": "object", "properties": {
            "source": {"type": "string", "description": "s3://bucket/prefix or an absolute folder under FACEINDEX_IMPORT_ROOTS"},
            "options": {"type": "object"},
            "webhook_url": {"type": "string"},
        }, "required": ["source"]},
    }, responses={202: JobSerializer})
    def post(self, request):
        body_object(request)
        options = _options(request.data.get("options"))
        webhook_url = _webhook_url(request.data.get("webhook_url"))
        idempotency_key = request.headers.get("Idempotency-Key")
        if request.data.get("source") and not request.FILES:
            job, created = services.submit_import(owner=request.user, source=request.data["source"],
                                                  idempotency_key=idempotency_key, options=options,
                                                  webhook_url=webhook_url)
        else:
            job, created = services.submit_job(owner=request.user, uploads=uploads_from_request(request),
                                               idempotency_key=idempotency_key, options=options,
                                               webhook_url=webhook_url)
        response = Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
        response["Location"] = f"/api/v1/jobs/{job.pk}"
        if not created:
            response["Idempotent-Replayed"] = "true"
        return response


class JobCancelApi(APIView):
    @extend_schema(request=None, responses=JobSerializer)
    def post(self, request, job_id: int):
        job = services.cancel_job(get_object_or_404(Job, owner=request.user, pk=job_id))
        return Response(JobSerializer(job).data)


class WebhookEndpointApi(APIView):
    """The owner's default completion webhook URL and signing secret."""

    parser_classes = [JSONParser, FormParser]

    @extend_schema(responses=WebhookEndpointSerializer)
    def get(self, request):
        return Response(WebhookEndpointSerializer(webhooks.endpoint_for(request.user)).data)

    @extend_schema(request=WebhookEndpointSerializer, responses=WebhookEndpointSerializer)
    def put(self, request):
        endpoint = webhooks.endpoint_for(request.user)
        endpoint.url = _webhook_url(request.data.get("url", ""))
        endpoint.save(update_fields=["url", "updated_at"])
        return Response(WebhookEndpointSerializer(endpoint).data)


class WebhookDeliveryListApi(APIView):
    """The delivery log (?job=)."""

    @extend_schema(responses=paginated(WebhookDeliverySerializer), parameters=PAGE_PARAMETERS)
    def get(self, request):
        deliveries = WebhookDelivery.objects.filter(owner=request.user)
        if (job_id := id_param(request, "job")) is not None:
            deliveries = deliveries.filter(job_id=job_id)
        return _paginate(self, request, deliveries.order_by("-id"), WebhookDeliverySerializer)


class JobDetailApi(APIView):
    @extend_schema(responses=JobSerializer)
    def get(self, request, job_id: int):
        return Response(JobSerializer(get_object_or_404(Job, owner=request.user, pk=job_id)).data)


class JobImagesApi(APIView):
    @extend_schema(responses=paginated(ImageSerializer), parameters=PAGE_PARAMETERS)
    def get(self, request, job_id: int):
        job = get_object_or_404(Job, owner=request.user, pk=job_id)
        images = Image.objects.filter(job=job).annotate(face_count=Count("faces")).order_by("id")
        if request.query_params.get("status"):
            images = images.filter(status=request.query_params["status"])
        return _paginate(self, request, images, ImageSerializer)


class ImageDetailApi(APIView):
    @extend_schema(responses=ImageSerializer)
    def get(self, request, image_id: int):
        image = get_object_or_404(Image.objects.annotate(face_count=Count("faces")), owner=request.user, pk=image_id)
        data = ImageSerializer(image).data
        data["face_list"] = FaceSerializer(image.faces.select_related("identity", "image"), many=True).data
        return Response(data)


class FaceListApi(APIView):
    @extend_schema(responses=paginated(FaceSerializer), parameters=PAGE_PARAMETERS)
    def get(self, request):
        faces = Face.objects.filter(owner=request.user).select_related("identity", "image")
        params = request.query_params
        if (job_id := id_param(request, "job")) is not None:
            job = get_object_or_404(Job, owner=request.user, pk=job_id)
            faces = faces.filter(pk__in=selectors.job_faces(job).values("pk"))  # dedup links included
        if (image_id := id_param(request, "image")) is not None:
            faces = faces.filter(image_id=image_id)
        if (identity_id := id_param(request, "identity")) is not None:
            faces = faces.filter(identity_id=identity_id)
        if params.get("unknown", "").lower() == "true":
            faces = faces.filter(identity__isnull=True)
        if params.get("outcome"):
            outcome = params["outcome"]
            if outcome not in ("named", "unknown", "low_quality"):
                raise ServiceError("invalid", "outcome must be one of named, unknown, low_quality", field="outcome")
            faces = {"named": faces.filter(identity__isnull=False), "low_quality": faces.filter(low_quality_faces()),
                     "unknown": faces.filter(identity__isnull=True).exclude(low_quality_faces())}[outcome]
        if params.get("mask"):
            states = params["mask"].split(",")
            unknown = set(states) - set(MaskState.values)
            if unknown:
                raise ServiceError("invalid", f"mask must be one of {', '.join(MaskState.values)}", field="mask")
            faces = faces.filter(mask_state__in=states)
        return _paginate(self, request, faces.order_by("id"), FaceSerializer)
