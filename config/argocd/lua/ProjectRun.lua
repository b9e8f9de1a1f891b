local phase = obj.status.phase
if phase == "Succeeded" then
  -- registerModel may still be at work: a run without a model at artifactPath needs a human;
  -- anything else (the model's RegisteredModel not created yet, the store down) is retried.
  hs = needsHuman(ready, stalled)
  if hs ~= nil then
    return hs
  end
  if ready.status ~= "True" then
    return { status = "Progressing", message = describe(ready, "Registering the run's model") }
  end
  return { status = "Healthy", message = describe(ready, "Run succeeded") }
end
if phase == "Failed" or phase == "Killed" then
  hs = { status = "Degraded" }
  if nonEmpty(ready.message) then
    hs.message = ready.message
  elseif obj.status.lastFailure ~= nil and nonEmpty(obj.status.lastFailure.message) then
    hs.message = obj.status.lastFailure.message
  elseif phase == "Killed" then
    hs.message = "Run was killed"
  else
    hs.message = "Run failed"
  end
  return hs
end
if obj.spec ~= nil and obj.spec.suspend == true then
  -- A finished run stays Healthy or Degraded above: suspending it changes nothing.
  return { status = "Suspended", message = describe(ready, "Suspended (spec.suspend is true)") }
end
if phase ~= nil and phase ~= "Pending" and phase ~= "Running" then
  return { status = "Unknown", message = "Unknown phase " .. tostring(phase) }
end
-- A run that cannot start (Stalled, or a terminal reason such as InvalidSpec) needs a human
-- like any other kind; otherwise it is on its way.
hs = needsHuman(ready, stalled)
if hs ~= nil then
  return hs
end
if phase == "Running" then
  return { status = "Progressing", message = describe(ready, "Run is running") }
end
return { status = "Progressing", message = describe(ready, "Run is pending") }
