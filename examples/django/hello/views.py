import os
import time

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods


def index(request):
    """A dynamic page: where and when it was rendered."""
    return render(request, 'hello/index.html', {
        'app': os.environ.get('HERD_APP', '-'),
        'node': os.environ.get('HERD_NODE', '-'),
        'worker': os.environ.get('HERD_WORKER', '-'),
        'release': os.environ.get('HERD_RELEASE', '-'),
        'pid': os.getpid(),
        # gunicorn's master: its workers are forked children.
        'ppid': os.getppid(),
        'now': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
    })


def healthz(request):
    """herd-node's health check (deploy --health /healthz)."""
    return HttpResponse('ok\n', content_type='text/plain')


@require_http_methods(['GET', 'POST'])
def form(request):
    """GET: a form protected by Django's CSRF middleware; POST: echo it."""
    message = None
    if request.method == 'POST':
        message = request.POST.get('message', '')
    return render(request, 'hello/form.html', {'message': message})
