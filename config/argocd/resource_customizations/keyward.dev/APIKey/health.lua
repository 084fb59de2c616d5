-- Argo CD health of a Keyward APIKey, from its kstatus conditions:
--   Progressing  until Keyward has judged the current generation, or while Reconciling is True
--   Suspended    spec.disabled (every key of the APIKey is rejected, reversibly)
--   Degraded     Stalled is True (expired, conflict, invalid spec: a person must act), or Ready is False
--   Healthy      Ready is True
local hs = {status = "Progressing", message = "Waiting for Keyward to reconcile the APIKey"}
if obj.status == nil or obj.status.observedGeneration == nil or obj.metadata.generation == nil
    or obj.status.observedGeneration < obj.metadata.generation then
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conditions[c.type] = c
  end
end
local ready = conditions["Ready"]
if obj.spec ~= nil and obj.spec.disabled == true then
  hs.status = "Suspended"
  hs.message = (ready ~= nil and ready.message) or "The APIKey is disabled"
  return hs
end
local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end
local reconciling = conditions["Reconciling"]
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = reconciling.message
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.message
end
return hs
