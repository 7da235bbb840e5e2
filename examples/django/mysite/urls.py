from django.conf import settings
from django.urls import path, re_path
from django.views.static import serve

from hello import views

urlpatterns = [
    path('', views.index, name='index'),
    path('healthz', views.healthz, name='healthz'),
    path('form', views.form, name='form'),
    # herd-front does not serve static files yet, so Django serves the
    # collectstatic output itself. django.views.static.serve is fine for an
    # example's one stylesheet, not for heavy static traffic.
    re_path(r'^static/(?P<path>.*)$', serve, {'document_root': settings.STATIC_ROOT}),
]
