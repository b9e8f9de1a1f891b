local phase = obj.status.phase
hs = {}
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Run succeeded")
elseif phase == "Failed" or phase == "Killed" then
  hs.status = "Degraded"
  if nonEmpty(ready.message) then
    hs.message = ready.message
  elseif obj.status.lastFailure ~= nil and nonEmpty(obj.status.lastFailure.message) then
    hs.message = obj.status.lastFailure.message
  elseif phase == "Killed" then
    hs.message = "Run was killed"
  else
    hs.message = "Run failed"
  end
elseif obj.spec ~= nil and obj.spec.suspend == true then
  -- A finished run stays Healthy or Degraded above: suspending it changes nothing.
  hs.status = "Suspended"
  hs.message = describe(ready, "Suspended (spec.suspend is true)")
elseif phase == nil or phase == "Pending" or phase == "Running" then
  -- A run that cannot start (Stalled, or a terminal reason such as InvalidSpec) needs a human
  -- like any other kind; otherwise it is on its way.
  if stalled ~= nil and stalled.status == "True" then
    hs.status = "Degraded"
    if ready.status ~= "True" and nonEmpty(ready.message) then
      hs.message = ready.message
    else
      hs.message = describe(stalled, "Stalled: a human must act")
    end
  elseif ready.status == "False" and TERMINAL_REASONS[ready.reason] then
    hs.status = "Degraded"
    hs.message = describe(ready, "Not ready")
  elseif phase == "Running" then
    hs.status = "Progressing"
    hs.message = describe(ready, "Run is running")
  else
    hs.status = "Progressing"
    hs.message = describe(ready, "Run is pending")
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
