# For people who build with Docker. Keyward's own images come from `make images` (no Docker daemon needed,
# reproducible digests); this builds the same binaries onto a distroless base.
#   docker build --build-arg COMPONENT=manager -t keyward-manager .
#   docker build --build-arg COMPONENT=verifier -t keyward-verifier .
FROM golang:1.26 AS build
ARG COMPONENT=manager
ARG VERSION=v0.0.0-dev
ARG REVISION=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN pkg=./cmd; if [ "$COMPONENT" = verifier ]; then pkg=./cmd/verifier; fi; \
    CGO_ENABLED=0 go build -trimpath -buildvcs=false -o /out/app \
      -ldflags "-s -w -buildid= -X github.com/keyward-dev/keyward/internal/version.Version=$VERSION -X github.com/keyward-dev/keyward/internal/version.Revision=$REVISION" \
      "$pkg"

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/app /usr/local/bin/keyward
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/keyward"]
