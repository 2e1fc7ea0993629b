# syntax=docker/dockerfile:1
#
# One image for every keymesh service; the command chooses what runs:
#   docker run keymesh serve vault signing     # services (all seven without names)
#   docker run keymesh migrate                 # bring the database schema up to date, exit
# There is no build step: TypeScript runs through tsx, a runtime dependency.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- dependencies: production node_modules, with the toolchain for native addons -------------
FROM ${NODE_IMAGE} AS deps
# better-sqlite3 downloads a prebuilt binary when one matches; otherwise it compiles.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 make g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --no-audit --no-fund

# ---- runtime ----------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    KEYMESH_HOST=0.0.0.0 \
    KEYMESH_PORT=8080 \
    KEYMESH_DATA_DIR=/var/lib/keymesh
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json tsconfig.json ./
COPY bin ./bin
COPY cli ./cli
COPY services ./services
COPY gen ./gen
COPY deploy/healthcheck.mjs ./deploy/healthcheck.mjs
# Embedded-storage default (SQLite, development master keys) for a lone `docker run`; mount a
# volume here to keep it (-v keymesh-data:/var/lib/keymesh). With KEYMESH_DATABASE_URL and
# KEYMESH_MASTER_KEYS nothing is written here and the root file system can be read-only (tsx
# keeps its compile cache in /tmp).
RUN mkdir -p /var/lib/keymesh && chown 1000:1000 /var/lib/keymesh

# The image's `node` user, numerically so that runAsNonRoot can verify it.
USER 1000:1000
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["node", "deploy/healthcheck.mjs"]
ENTRYPOINT ["node", "bin/keymesh.js"]
CMD ["serve"]
