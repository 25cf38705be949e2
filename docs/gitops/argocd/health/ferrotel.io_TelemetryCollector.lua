-- ArgoCD health check for ferrotel.io/TelemetryCollector.
-- Reads the conditions the Ferrotel operator writes (metav1.Condition):
--   ConfigValid=False  -> Degraded (the config was refused; the last good one keeps serving)
--   Degraded=True      -> Degraded
--   Ready=True         -> Healthy
--   anything else      -> Progressing (rolling out, or not reconciled yet)
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
  hs.message = "Waiting for the Ferrotel operator to reconcile this TelemetryCollector"
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
local configValid = condition(conditions, "ConfigValid")
if configValid ~= nil and configValid.status == "False" then
  hs.status = "Degraded"
  hs.message = text(configValid, "The collector configuration is invalid")
  return hs
end

local degraded = condition(conditions, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = text(degraded, "The TelemetryCollector is degraded")
  return hs
end

local ready = condition(conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "The collector is ready")
  return hs
end

hs.status = "Progressing"
hs.message = text(ready, "Waiting for the collector to become ready")
return hs
