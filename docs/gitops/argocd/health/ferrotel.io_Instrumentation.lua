-- ArgoCD health check for ferrotel.io/Instrumentation.
-- Reads the conditions the Ferrotel operator writes (metav1.Condition):
--   Degraded=True  -> Degraded (collector not found, ambiguous opt-in, invalid spec, ...)
--   Ready=True     -> Healthy (every probe DaemonSet rolled out, exporter resolved)
--   anything else  -> Progressing (probes rolling out, or not reconciled yet)
-- A status older than the spec (observedGeneration < generation) is
-- Progressing: the operator has not looked at the latest change yet.
local hs = {}

local function condition(conditions, type)
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil or obj.status.conditions == nil or #obj.status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ferrotel operator to reconcile this Instrumentation"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ferrotel operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local degraded = condition(conditions, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = text(degraded, "The Instrumentation is degraded")
  return hs
end

local ready = condition(conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Every probe DaemonSet is ready")
  return hs
end

local progressing = condition(conditions, "Progressing")
hs.status = "Progressing"
hs.message = text(progressing, text(ready, "Waiting for the probe DaemonSets to become ready"))
return hs
