# Ferrotel with Terraform + ArgoCD, mirroring the OpenTelemetry Operator
# + Beyla setup it replaces: ArgoCD installs the chart (one operator instead
# of two charts), and Terraform creates the collector, the instrumentation and
# the opted-in namespace as Kubernetes objects.
#
# kubernetes_manifest needs the CRDs at plan time: apply the chart first
#   terraform apply -target=argocd_application.ferrotel
# then the rest with `terraform apply` (see docs/install.md).

terraform {
  required_version = ">= 1.5.0"
  required_providers {
    argocd = {
      source  = "argoproj-labs/argocd"
      version = "~> 7.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.31"
    }
  }
}

variable "ferrotel_version" {
  description = "Ferrotel release (git tag of the chart and image tag)."
  type        = string
  default     = "0.1.0"
}

variable "app_namespace" {
  description = "Namespace of the services to trace; it is opted in with the ferrotel.io/instrument annotation."
  type        = string
  default     = "shop"
}

# The operator, its CRDs and RBAC (replaces both the Beyla and the
# OpenTelemetry Operator Applications: eBPF tracing of Go services needs no
# extra flag).
resource "argocd_application" "ferrotel" {
  metadata {
    name      = "ferrotel"
    namespace = "argocd"
  }

  spec {
    project = "default"

    source {
      repo_url        = "https://github.com/ferrotel/ferrotel.git"
      path            = "charts/ferrotel"
      target_revision = "v${var.ferrotel_version}"

      helm {
        release_name = "ferrotel"
        values = yamlencode({
          operator = {
            logLevel = "info"
            leaderElection = {
              enabled = true
            }
          }
          defaultImages = {
            collector = {
              repository = "ghcr.io/ferrotel/otelcol"
              tag        = "0.161.0"
            }
          }
          # ArgoCD does not run Helm's pre-delete hooks.
          uninstallCleanup = {
            enabled = false
          }
        })
      }
    }

    destination {
      server    = "https://kubernetes.default.svc"
      namespace = "ferrotel-system"
    }

    sync_policy {
      automated {
        prune     = true
        self_heal = true
      }
      sync_options = ["CreateNamespace=true", "ServerSideApply=true"]
    }
  }
}

resource "kubernetes_namespace_v1" "otel" {
  metadata {
    name = "otel"
  }
}

# The seed's "otel-collector": OTLP gRPC and HTTP in, the debug exporter out.
resource "kubernetes_manifest" "otel_collector" {
  manifest = {
    apiVersion = "ferrotel.io/v1alpha1"
    kind       = "TelemetryCollector"
    metadata = {
      name      = "otel-collector"
      namespace = kubernetes_namespace_v1.otel.metadata[0].name
    }
    spec = {
      mode = "deployment"
      config = {
        receivers = {
          otlp = {
            protocols = {
              grpc = {
                endpoint = "0.0.0.0:4317"
              }
              http = {
                endpoint = "0.0.0.0:4318"
              }
            }
          }
        }
        exporters = {
          debug = {
            verbosity = "detailed"
          }
        }
        service = {
          pipelines = {
            traces = {
              receivers  = ["otlp"]
              processors = []
              exporters  = ["debug"]
            }
          }
        }
      }
    }
  }

  depends_on = [argocd_application.ferrotel]
}

# Replaces Beyla: Go and Python services in opted-in namespaces are traced
# and their spans go to the collector above (the seed's
# OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).
resource "kubernetes_manifest" "instrumentation" {
  manifest = {
    apiVersion = "ferrotel.io/v1alpha1"
    kind       = "Instrumentation"
    metadata = {
      name      = "default"
      namespace = kubernetes_namespace_v1.otel.metadata[0].name
    }
    spec = {
      languages = ["go", "python"]
      exporter = {
        collectorRef = {
          name = "otel-collector"
        }
      }
    }
  }

  depends_on = [kubernetes_manifest.otel_collector]
}

# Opting a namespace in: no pod restart, no sidecar, no webhook.
resource "kubernetes_namespace_v1" "app" {
  metadata {
    name = var.app_namespace
    annotations = {
      "ferrotel.io/instrument" = "true"
    }
  }
}
