# smtest image: the web process, the workers and the recovery pass all run from it, with
# different commands (docker-compose.yml). Not built in CI: the CI machine has no Docker engine
# (docs/deployment.md, "Docker Compose").
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system smtest && useradd --system --gid smtest --home-dir /app --no-create-home smtest
WORKDIR /app

COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .
# The static files are part of the image: collectstatic needs no database or secret. It runs with
# every app a container may install, so the image holds every file a running configuration links:
# TASKS_BACKEND=rq (what docker-compose.yml runs) adds django-rq, whose queue pages in the admin
# have their own CSS. Nothing connects to Redis here. tests/project/test_docker_image.py checks
# that this gives the same files as the compose settings.
RUN DEBUG=0 SECRET_KEY=collectstatic-only TASKS_BACKEND=rq REDIS_URL=redis://localhost:6379/1 \
    python manage.py collectstatic --no-input \
    && chown -R smtest:smtest /app/var

USER smtest
EXPOSE 8000
# gunicorn listens on 0.0.0.0:$PORT inside the container (deploy/gunicorn.conf.py).
ENV PORT=8000
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py"]
