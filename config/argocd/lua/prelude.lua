-- The status is kstatus-shaped: status.observedGeneration, and status.conditions entries
-- {type, status = "True"|"False"|"Unknown", reason (CamelCase), message, observedGeneration}
-- of type Ready (always present after the first reconcile), Progressing and Stalled.
--
-- Uses only Lua's base and table libraries (no string, math or os), which Argo CD loads even
-- without resource.customizations.useOpenLibs.

-- Ready=False with one of these reasons needs a human: Degraded. Any other reason
-- (StoreUnavailable, Reconciling, Pending, ...) is retried by the operator: Progressing.
local TERMINAL_REASONS = {
  -- @terminal-reasons: one `Name = true,` line per reason whose Reason::is_terminal is true
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

-- Degraded when a human must act: Stalled=True, or Ready=False with a terminal reason. nil
-- otherwise.
local function needsHuman(ready, stalled)
  if stalled ~= nil and stalled.status == "True" then
    if ready.status ~= "True" and nonEmpty(ready.message) then
      return { status = "Degraded", message = ready.message }
    end
    return { status = "Degraded", message = describe(stalled, "Stalled: a human must act") }
  end
  if ready.status == "False" and TERMINAL_REASONS[ready.reason] then
    return { status = "Degraded", message = describe(ready, "Not ready") }
  end
  return nil
end

-- What the Ready condition says once nothing needs a human.
local function fromReady(ready)
  if ready.status == "True" then
    return { status = "Healthy", message = describe(ready, "Ready") }
  end
  if ready.status == "False" then
    return { status = "Progressing", message = describe(ready, "Not ready yet") }
  end
  return { status = "Progressing", message = describe(ready, "Readiness not known yet") }
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
