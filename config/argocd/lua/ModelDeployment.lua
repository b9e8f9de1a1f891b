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
