if obj.spec ~= nil and obj.spec.suspend == true then
  -- The operator leaves the serving workload as it is while suspended.
  return { status = "Suspended", message = describe(ready, "Suspended (spec.suspend is true)") }
end
hs = needsHuman(ready, stalled)
if hs ~= nil then
  return hs
end
local progressing = getCondition("Progressing")
if progressing ~= nil and progressing.status == "True" then
  -- During a rollout Ready may still be True (the previous version serves): then the
  -- Progressing condition says what is being rolled out.
  if ready.status ~= "True" and nonEmpty(ready.message) then
    return { status = "Progressing", message = ready.message }
  end
  return { status = "Progressing", message = describe(progressing, "Rolling out") }
end
return fromReady(ready)
