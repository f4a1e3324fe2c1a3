# postgate SMTP edge. Build: docker build -t postgate .
# Runs as the unprivileged "node" user, so it listens on 2525 (not 25): a
# load balancer or `-p 25:2525` maps the public port. See docs/deploy.md.

# --- build: compile TypeScript -------------------------------------------
FROM node:22-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY test ./test
COPY schema ./schema
RUN npm run build

# --- runtime: production dependencies and the compiled code only --------
FROM node:22-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist/src ./dist/src
COPY schema ./schema
COPY deploy ./deploy
# The local store (spool, blobs) must be writable by the non-root user.
RUN mkdir -p /app/data && chown node:node /app/data
USER node
# Default configuration: listens on 0.0.0.0:2525 (SMTP) and 0.0.0.0:9025
# (operations: /healthz, /readyz, /metrics). Override with POSTGATE_CONFIG
# (a mounted file) or POSTGATE_* variables (docs/configuration.md).
ENV POSTGATE_CONFIG=/app/deploy/edge.yaml
EXPOSE 2525 9025
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9025/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# SIGTERM starts the drain (docs/operations.md, "Graceful shutdown").
STOPSIGNAL SIGTERM
CMD ["node", "dist/src/cli/index.js", "serve"]
