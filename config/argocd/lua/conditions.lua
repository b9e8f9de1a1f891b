hs = {}
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  if ready.status ~= "True" and nonEmpty(ready.message) then
    hs.message = ready.message
  else
    hs.message = describe(stalled, "Stalled: a human must act")
  end
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
elseif ready.status == "False" and TERMINAL_REASONS[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready, "Not ready")
elseif ready.status == "False" then
  hs.status = "Progressing"
  hs.message = describe(ready, "Not ready yet")
else
  hs.status = "Progressing"
  hs.message = describe(ready, "Readiness not known yet")
end
return hs
