"""Settings for the mysite example: a Django project run by herd.

Written for Django 3.2 (Debian 12's python3-django) and later.
"""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Set DJANGO_SECRET_KEY in production: herdctl deploy ... --env DJANGO_SECRET_KEY=...
# The fallback is for trying the example only; never use it for a real site.
SECRET_KEY = os.environ.get(
    'DJANGO_SECRET_KEY',
    'example-only-insecure-secret-key-change-me',
)

DEBUG = False

# herd-front routes a request to this app only when its Host matches the
# app's --host, and it keeps that Host, so the front already does the job
# ALLOWED_HOSTS does. '*' keeps the example independent of the host name it
# is deployed under; list your names instead when the workers can be reached
# other than through the front.
ALLOWED_HOSTS = ['*']

INSTALLED_APPS = [
    'django.contrib.staticfiles',
    'hello',
]

MIDDLEWARE = [
    'django.middleware.security.SecurityMiddleware',
    'django.middleware.common.CommonMiddleware',
    'django.middleware.csrf.CsrfViewMiddleware',
    'django.middleware.clickjacking.XFrameOptionsMiddleware',
]

ROOT_URLCONF = 'mysite.urls'

TEMPLATES = [
    {
        'BACKEND': 'django.template.backends.django.DjangoTemplates',
        'DIRS': [],
        'APP_DIRS': True,
        'OPTIONS': {
            'context_processors': [
                'django.template.context_processors.request',
            ],
        },
    },
]

WSGI_APPLICATION = 'mysite.wsgi.application'

# No database and no sessions: the example keeps no state.
DATABASES = {}

# CSRF: the token lives in the csrftoken cookie (not in a session), so any
# worker on any node can check it.
CSRF_USE_SESSIONS = False
# herd-front does not terminate TLS yet; set CSRF_COOKIE_SECURE = True once
# the site is served over https.
CSRF_COOKIE_SECURE = False

# Behind herd-front. The front keeps the client's Host header and also sets
# X-Forwarded-Host and X-Forwarded-Proto itself (a client's own X-Forwarded-*
# headers are dropped unless it is a --trusted-proxy), so Django sees the
# host and scheme the browser used. That is also why CSRF_TRUSTED_ORIGINS is
# not needed: a form posted from http://django.test/form carries
# Origin/Referer http://django.test, which is the request's own scheme and
# host. Set it only for forms posted from another origin.
USE_X_FORWARDED_HOST = True
SECURE_PROXY_SSL_HEADER = ('HTTP_X_FORWARDED_PROTO', 'https')

LANGUAGE_CODE = 'en-us'
TIME_ZONE = 'UTC'
USE_I18N = False
USE_TZ = True

# Static files: `manage.py collectstatic --noinput` copies them to
# staticfiles/ before `herdctl deploy`, so the release carries them and a
# worker never writes into its release directory.
STATIC_URL = '/static/'
STATIC_ROOT = BASE_DIR / 'staticfiles'

# Errors go to stderr, which herd-node keeps (the last lines are shown when a
# worker fails); with DEBUG = False Django would otherwise only mail them.
LOGGING = {
    'version': 1,
    'disable_existing_loggers': False,
    'handlers': {
        'stderr': {'class': 'logging.StreamHandler'},
    },
    'loggers': {
        'django': {'handlers': ['stderr'], 'level': 'WARNING'},
    },
}
