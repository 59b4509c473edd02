import csv

from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.core.pagination import Pagination
from backend.core.params import id_param
from backend.gallery import services as gallery_services
from backend.gallery.models import Identity
from backend.jobs.models import Job

from . import selectors
from .charts import appearances_per_month_png


class IdentityReportListApi(APIView):
    def get(self, request):
        job_id = id_param(request, "job")
        job = get_object_or_404(Job, owner=request.user, pk=job_id) if job_id is not None else None
        with_urls = request.query_params.get("urls", "false").lower() == "true"
        return Response(selectors.identity_report(owner=request.user, job=job, with_urls=with_urls))


def _identity(request, identity_id: int) -> Identity:
    return get_object_or_404(Identity, owner=request.user, pk=identity_id)


class IdentityStatisticsApi(APIView):
    """Counts, first/last seen, appearances per month, top co-occurring identities."""

    def get(self, request, identity_id: int):
        identity = _identity(request, identity_id)
        body = selectors.identity_statistics(owner=request.user, identity=identity)
        body["appearances_url"] = f"/api/v1/reports/appearances?identity={identity.pk}"
        body["appearances_csv_url"] = f"/api/v1/reports/appearances.csv?identity={identity.pk}"
        body["timeline_png_url"] = f"/api/v1/reports/identities/{identity.pk}/timeline.png"
        return Response(body)


class IdentityTimelineChartApi(APIView):
    def get(self, request, identity_id: int):
        identity = _identity(request, identity_id)
        stats = selectors.identity_statistics(owner=request.user, identity=identity)
        return HttpResponse(appearances_per_month_png(identity.name, stats["per_month"]), content_type="image/png")


class JobReportSummaryApi(APIView):
    """Per job: images, faces, known vs unknown, identities with counts, failures with reasons."""

    def get(self, request, job_id: int):
        return Response(selectors.job_summary(job=get_object_or_404(Job, owner=request.user, pk=job_id)))


def _appearance_queryset(request):
    params = request.query_params
    identity_id, job_id = id_param(request, "identity"), id_param(request, "job")
    identity = _identity(request, identity_id) if identity_id is not None else None
    job = get_object_or_404(Job, owner=request.user, pk=job_id) if job_id is not None else None
    return selectors.appearances(owner=request.user, identity=identity, job=job,
                                 known_only=params.get("known", "").lower() == "true")


class AppearanceListApi(APIView):
    """Every appearance as JSON, page by page (?identity=, ?job=, ?known=true, ?page_size= up to 500)."""

    def get(self, request):
        paginator = Pagination()
        page = paginator.paginate_queryset(_appearance_queryset(request), request, view=self)
        return paginator.get_paginated_response([selectors.appearance_row(face) for face in page])


class _Echo:
    def write(self, value):
        return value


class AppearanceCsvApi(APIView):
    """Every appearance as CSV, streamed from a server-side cursor (same filters as the JSON list)."""

    def get(self, request):
        queryset = _appearance_queryset(request)
        with_urls = request.query_params.get("urls", "true").lower() == "true"
        writer = csv.DictWriter(_Echo(), fieldnames=selectors.APPEARANCE_FIELDS)

        def lines():
            yield writer.writeheader()
            for row in selectors.iter_appearance_rows(queryset, with_urls=with_urls):
                yield writer.writerow(row)

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="appearances.csv"'
        return response


# Routed under jobs/ and identities/ (backend/api/urls.py); reports, so they live here.
class JobReportApi(APIView):
    def get(self, request, job_id: int):
        job = get_object_or_404(Job, owner=request.user, pk=job_id)
        with_urls = request.query_params.get("urls", "false").lower() == "true"
        return Response({
            "summary": selectors.job_summary(job=job),
            "report": selectors.identity_report(owner=request.user, job=job, with_urls=with_urls),
        })


class IdentityReportApi(APIView):
    def get(self, request, identity_id: int):
        identity = gallery_services.get_identity(owner=request.user, identity_id=identity_id)
        report = selectors.identity_report(owner=request.user, identity=identity, with_urls=True)
        row = report["identities"][0] if report["identities"] else {
            "identity_id": identity.pk, "name": identity.name, "appearances": 0, "images": 0, "mean_similarity": None, "faces": []}
        return Response(row)
