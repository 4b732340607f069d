package health

// hysteresis turns probe results into state changes: down after Fall consecutive failures, up
// after Rise consecutive successes, as in HAProxy and Keepalived.
type hysteresis struct {
	rise, fall int
	up         bool
	streak     int // consecutive results that disagree with the current state
}

func (h *hysteresis) first(r Result) Change {
	h.up = r.Err == nil
	h.streak = 0
	c := Change{Up: h.up, First: true, Err: r.Err, Streak: 1, Need: 1}
	return c
}

func (h *hysteresis) observe(err error) (Change, bool) {
	if (err == nil) == h.up {
		h.streak = 0
		return Change{}, false
	}
	h.streak++
	need := h.fall
	if !h.up {
		need = h.rise
	}
	if h.streak < need {
		return Change{}, false
	}
	h.up = !h.up
	c := Change{Up: h.up, Err: err, Streak: h.streak, Need: need}
	h.streak = 0
	return c, true
}
