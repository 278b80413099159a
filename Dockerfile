# One orderlog node: the REST API and its order worker, on SQLite in the volume /data by
# default, or on PostgreSQL or MariaDB (ORDERLOG_DATABASE_URL). Build: docker build -t
# orderlog .   Alone: docs/deployment.md.   Several against one database: docker-compose.yml,
# where nginx (deploy/nginx.conf) stands in front and the node listens on an internal network
# only. It listens on 0.0.0.0 inside its container: publish it directly only where no proxy
# can stand in front (it then bounds each client itself; see docs/deployment.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# setup.cfg reads the version from orderlog/ and the long description from README.md.
COPY pyproject.toml setup.cfg README.md ./
COPY orderlog ./orderlog
COPY projections ./projections
COPY api ./api
# The drivers for every database URL orderlog takes (orderlog.storage.database.DRIVERS).
RUN pip install '.[postgres,mysql]' \
    && useradd --system --no-create-home --uid 10001 orderlog \
    && mkdir /data && chown orderlog:orderlog /data

USER orderlog
# /app belongs to root: the SQLite file lives in the volume, which the user owns (a new
# volume takes the owner of the image's /data). Four slashes: an absolute path.
ENV ORDERLOG_PORT=8000 \
    ORDERLOG_DATABASE_URL=sqlite:////data/orderlog.db
VOLUME /data
EXPOSE 8000

# Ready means: worker threads alive, writer alive, database reachable (GET /readyz is 200).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ORDERLOG_PORT', '8000') + '/readyz', timeout=2)" || exit 1

# Serving on 0.0.0.0 needs an API token: the entrypoint provisions one from the file
# ORDERLOG_TOKEN_FILE names (a Docker secret), then execs orderlog serve (PID 1). With no
# token at all, serve refuses to start, saying how to make one (`docker run --rm -v
# DATA:/data orderlog token create ...`: the entrypoint runs other orderlog commands).
COPY deploy/entrypoint.sh /usr/local/bin/orderlog-entrypoint
ENTRYPOINT ["orderlog-entrypoint"]
