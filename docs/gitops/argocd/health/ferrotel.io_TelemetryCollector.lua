-- ArgoCD health check for ferrotel.io/TelemetryCollector.
-- Reads the conditions the Ferrotel operator writes (metav1.Condition):
--   spec.managementState=unmanaged -> Suspended (the operator writes nothing)
--   ConfigValid=False  -> Degraded (the config was refused; the last good one keeps serving)
--   Reconciled=False   -> Degraded (the operator could not apply the children)
--   Progressing=True   -> Progressing (a new config or image is rolling out)
--   Available=True     -> Healthy (as many ready collector pods as desired)
--   anything else      -> Progressing (pods not ready yet, or not reconciled yet)
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

if obj.spec ~= nil and obj.spec.managementState == "unmanaged" then
  hs.status = "Suspended"
  hs.message = "spec.managementState is unmanaged: the operator leaves this collector alone"
  return hs
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

local reconciled = condition(conditions, "Reconciled")
if reconciled ~= nil and reconciled.status == "False" then
  hs.status = "Degraded"
  hs.message = text(reconciled, "The operator could not apply the collector's objects")
  return hs
end

local progressing = condition(conditions, "Progressing")
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = text(progressing, "The collector is rolling out")
  return hs
end

local available = condition(conditions, "Available")
if available ~= nil and available.status == "True" then
  hs.status = "Healthy"
  hs.message = text(available, "The collector is available")
  return hs
end

hs.status = "Progressing"
hs.message = text(available, "Waiting for the collector pods to become ready")
return hs
