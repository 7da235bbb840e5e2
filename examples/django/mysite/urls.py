from django.urls import path

from hello import views

urlpatterns = [
    path('', views.index, name='index'),
    path('healthz', views.healthz, name='healthz'),
    path('form', views.form, name='form'),
    # /static/ is served by herd-front from the release's staticfiles/
    # (herdctl deploy --static /static/=staticfiles/): it never reaches
    # Gunicorn.
]
