# streamrec consumer image: `docker build -t streamrec .`, then `docker run streamrec run`.
# Two stages so the runtime image carries wheels only, no build tools or source tree.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY streamrec ./streamrec
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# One BLAS thread: multithreaded BLAS made the top-K refresh 3-7x slower (DESIGN.md, Scoring).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    STREAMREC_SERVICE__STATE_DIR=/var/lib/streamrec \
    STREAMREC_SERVICE__METRICS_PORT=9108
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels streamrec \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /var/lib/streamrec streamrec \
    && mkdir -p -m 0700 /var/lib/streamrec \
    && chown streamrec /var/lib/streamrec
USER streamrec
WORKDIR /var/lib/streamrec
# Checkpoints live here; mount a volume so the model survives container replacement.
VOLUME ["/var/lib/streamrec"]
EXPOSE 9108
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=3)"]
ENTRYPOINT ["streamrec"]
CMD ["run"]
