from django.shortcuts import get_object_or_404
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.jobs.models import Job

from . import selectors


class IdentityReportListApi(APIView):
    def get(self, request):
        job = None
        if request.query_params.get("job"):
            job = get_object_or_404(Job, owner=request.user, pk=request.query_params["job"])
        with_urls = request.query_params.get("urls", "false").lower() == "true"
        return Response(selectors.identity_report(owner=request.user, job=job, with_urls=with_urls))
