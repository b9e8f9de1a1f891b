-- Argo CD health check for ferroflow.dev/ModelDeployment.
--
-- The status is kstatus-shaped: status.observedGeneration, and status.conditions entries
-- {type, status = "True"|"False"|"Unknown", reason (CamelCase), message, observedGeneration}
-- of type Ready (always present after the first reconcile), Progressing and Stalled.
--
-- Uses only Lua's base and table libraries (no string, math or os), which Argo CD loads even
-- without resource.customizations.useOpenLibs. Edit this file, then run
-- config/argocd/generate.sh to copy it into config/argocd/argocd-cm-health.yaml.

-- Ready=False with one of these reasons needs a human: Degraded. Any other reason
-- (StoreUnavailable, Reconciling, Pending, ...) is retried by the operator: Progressing.
local TERMINAL_REASONS = {
  VersionNotFound = true,
  ModelNotFound = true,
  AliasNotFound = true,
  OwnedElsewhere = true,
  InvalidSpec = true,
  PolicyDenied = true,
  RolloutStuck = true,
  AnalysisFailed = true,
  RolledBack = true,
}

local function nonEmpty(s)
  return s ~= nil and s ~= ""
end

local function getCondition(conditionType)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

-- A condition's message, else its reason, else the fallback.
local function describe(c, fallback)
  if c ~= nil and nonEmpty(c.message) then
    return c.message
  end
  if c ~= nil and nonEmpty(c.reason) then
    return c.reason
  end
  return fallback
end

-- What every ferroflow kind shares: Progressing while the resource is being deleted or the
-- operator has not yet reported on the current spec. Returns nil once the conditions describe
-- the current generation.
local function notYetObserved()
  local metadata = obj.metadata or {}
  local ready = getCondition("Ready")
  if metadata.deletionTimestamp ~= nil then
    -- Checked before the generation: the API server bumps a custom resource's generation when
    -- its deletion starts, so the lag message below would hide what is going on.
    if ready ~= nil and ready.reason == "Deleting" and nonEmpty(ready.message) then
      return { status = "Progressing", message = ready.message }
    end
    return { status = "Progressing", message = "Being deleted" }
  end
  -- observedGeneration first (Argo CD's guidance for custom health checks): conditions written
  -- for an older spec say nothing about the current one.
  local generation = metadata.generation
  if obj.status ~= nil and type(generation) == "number" then
    local observed = obj.status.observedGeneration
    if ready ~= nil and type(ready.observedGeneration) == "number"
        and (type(observed) ~= "number" or ready.observedGeneration < observed) then
      observed = ready.observedGeneration
    end
    if type(observed) == "number" and observed < generation then
      return {
        status = "Progressing",
        message = "Waiting for the operator to observe generation " .. tostring(generation)
          .. " (status is for generation " .. tostring(observed) .. ")",
      }
    end
  end
  if ready == nil then
    return { status = "Progressing", message = "Waiting for the operator's first reconcile" }
  end
  return nil
end

local hs = notYetObserved()
if hs ~= nil then
  return hs
end

local ready = getCondition("Ready")
local stalled = getCondition("Stalled")
local progressing = getCondition("Progressing")
hs = {}
if obj.spec ~= nil and obj.spec.suspend == true then
  -- The operator leaves the serving workload as it is while suspended.
  hs.status = "Suspended"
  hs.message = describe(ready, "Suspended (spec.suspend is true)")
elseif stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  if ready.status ~= "True" and nonEmpty(ready.message) then
    hs.message = ready.message
  else
    hs.message = describe(stalled, "Stalled: a human must act")
  end
elseif ready.status == "False" and TERMINAL_REASONS[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready, "Not ready")
elseif progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  -- During a rollout Ready may still be True (the previous version serves): then the
  -- Progressing condition says what is being rolled out.
  if ready.status ~= "True" and nonEmpty(ready.message) then
    hs.message = ready.message
  else
    hs.message = describe(progressing, "Rolling out")
  end
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
elseif ready.status == "False" then
  hs.status = "Progressing"
  hs.message = describe(ready, "Not ready yet")
else
  hs.status = "Progressing"
  hs.message = describe(ready, "Readiness not known yet")
end
return hs
