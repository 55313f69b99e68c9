"""Compiled (numba) kernel of one traffic tick: the same model as `TrafficModel.step_numpy`.

Loops instead of array expressions, so that 50 vehicles cost a few microseconds instead of a few
hundred numpy calls. Differences from the numpy path, both deliberate: the leader scan checks every
node along the path (the numpy path samples every `stride` nodes on padded occupancy), and successor
choices use one uniform draw per vehicle per tick, pre-drawn by the caller from the episode's
Generator (so episodes stay deterministic for a seed on either path).

`AVAILABLE` is False when numba is not installed; the numpy path then runs.
"""

from __future__ import annotations

import numpy as np

try:  # numba is optional: the numpy implementation is the reference
    from numba import njit

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only without numba
    AVAILABLE = False

    def njit(*args, **kwargs):
        def deco(f):
            return f

        return deco if not (len(args) == 1 and callable(args[0])) else args[0]


ENTRY_LIGHT = 1
ENTRY_STOP = 2
RED = 0
YELLOW = 1
MAX_HOPS_PER_TICK = 4


@njit(cache=True)
def covers_lane_node(lx, ly, phi, obs_hl, obs_hw, half_spacing, footprint_hw):
    """Whether an obstacle box covers a lane node's footprint (scalars or arrays).

    The footprint is the thin rectangle a lane follower sweeps through the node: half a node spacing
    along the lane and `footprint_hw` across it. Separating-axis test of two oriented rectangles in
    the obstacle frame: (lx, ly) the node there, phi the lane heading relative to the obstacle. For a
    lane parallel to the obstacle (phi = 0) it is |lx| <= hl + half_spacing and |ly| <= hw +
    footprint_hw; for crossing lanes the footprint's width also reaches past the obstacle's ends,
    so vehicles crossing in front of a stopped car see its corners.
    """
    cos_phi, sin_phi = np.cos(phi), np.sin(phi)
    c, s = np.abs(cos_phi), np.abs(sin_phi)
    along = lx * cos_phi + ly * sin_phi
    across = ly * cos_phi - lx * sin_phi
    return (
        (np.abs(lx) <= obs_hl + half_spacing * c + footprint_hw * s)
        & (np.abs(ly) <= obs_hw + half_spacing * s + footprint_hw * c)
        & (np.abs(along) <= half_spacing + obs_hl * c + obs_hw * s)
        & (np.abs(across) <= footprint_hw + obs_hl * s + obs_hw * c)
    )


@njit(cache=True)
def _grant(cand, count, pick, entry_of, node, seg_of, seg_junction, conflict_ptr, conflict_idx, resv_seg, resv_entry,
           wait_since, ids, busy, ego_busy, n, claimed, v, front, b_comf, time_s, patience_s, claim_until,
           claim_hold_s):  # fmt: skip
    """Serve reservation requests first come, first served (ties by id) against busy junction lanes.

    Fairness: a request denied after waiting >= patience_s claims its lane; a later request (in that
    order) that conflicts with a claimed lane is denied too when it can still stop before the line
    (v^2 <= 2 b_comf front), so a steady cross stream cannot starve the waiting vehicle. A claim
    lasts claim_hold_s past the last denial (the waiting vehicle may drop out of the requests for a
    moment while cross traffic passes its exit); claims of vehicles not asking this tick count from
    the start. Claims only ever deny, so they never let two conflicting vehicles in.
    """
    busy[:] = 0
    claimed[:] = 0
    asking = np.zeros(n, np.bool_)
    for a in range(count):
        asking[cand[a]] = True
    for i in range(n):
        if not asking[i] and resv_seg[i] < 0 and claim_until[i] >= time_s and pick[i] >= 0:
            claimed[pick[i]] += 1
    for i in range(n):
        if resv_seg[i] >= 0:
            busy[resv_seg[i]] += 1
        s = seg_of[node[i]]
        if seg_junction[s] >= 0:
            busy[s] += 1
    for k in range(ego_busy.shape[0]):
        busy[ego_busy[k]] += 1
    # insertion sort of the (few) candidates by (wait_since, id)
    order = cand[:count].copy()
    for a in range(1, count):
        x = order[a]
        b = a - 1
        while b >= 0 and (
            wait_since[order[b]] > wait_since[x]
            or (wait_since[order[b]] == wait_since[x] and ids[order[b]] > ids[x])
        ):
            order[b + 1] = order[b]
            b -= 1
        order[b + 1] = x
    for a in range(count):
        i = order[a]
        c = pick[i]
        here = entry_of[i]
        if c < 0 or seg_junction[c] < 0:
            resv_entry[i] = here
            continue
        free = True
        for k in range(conflict_ptr[c], conflict_ptr[c + 1]):
            if busy[conflict_idx[k]] > 0:
                free = False
                break
        if free and v[i] * v[i] <= 2.0 * b_comf * max(front[i], 0.0):
            for k in range(conflict_ptr[c], conflict_ptr[c + 1]):
                if claimed[conflict_idx[k]] > 0:
                    free = False
                    break
        if free:
            resv_seg[i] = c
            resv_entry[i] = here
            busy[c] += 1
            claim_until[i] = -np.inf
        elif time_s - wait_since[i] >= patience_s:
            claimed[c] += 1
            claim_until[i] = time_s + claim_hold_s


@njit(cache=True)
def traffic_step(
    # graph
    xyz, yaw_n, edge_len, seg_of, next_node, seg_start, seg_count, succ_ptr, succ_idx, seg_junction,
    conflict_ptr, conflict_idx, entry_dist, entry_seg, speed_limit, node_steer, entry_kind, entry_signal,
    light_state, seg_length,
    # vehicles (updated in place)
    ids, node, nnode, prev, frac, choice, entry_of_pick, entry_pick, v, acc, v_scale, speed_cap, forced_brake, ignore_signals,
    stopped_at, resv_seg, resv_entry, wait_since, claim_until, remove_requested, hl, box_follow, rand,
    # obstacles off the graph: candidate lane nodes (with their obstacle) and the obstacles' boxes
    cand_nodes, cand_owner, obs_xy, obs_yaw, obs_hl, obs_hw, obs_speed, node_xy, node_s, footprint_hw,
    half_spacing, mark_nodes, ego_busy,
    # work arrays (occ all -1 on entry and on return)
    occ, occ_off, occ_v, busy, claimed,
    # parameters
    dt, time_s, lookahead_m, a_max, b_comf, d_max, s0, s0_stop, headway, delta, snap_gap, crawl,
    yellow_decel, safety_gap, request_m, stop_radius, stopped_speed, patience_s, claim_hold_s, box_follow_mps,
    # outputs
    out_xyz, out_yaw, out_vel, out_ctrl, gap_lead, gap_stop, leader,
):  # fmt: skip
    n = node.shape[0]
    # 1. occupancy
    for i in range(n):
        e = edge_len[node[i]]
        pos = frac[i] * e
        occ[prev[i]] = i
        occ_off[prev[i]] = pos + edge_len[prev[i]]
        occ_v[prev[i]] = v[i]
        occ[node[i]] = i
        occ_off[node[i]] = pos
        occ_v[node[i]] = v[i]
        occ[nnode[i]] = i
        occ_off[nnode[i]] = pos - e
        occ_v[nnode[i]] = v[i]
    # an obstacle covers a lane node when its box meets the node's footprint (covers_lane_node); the
    # node before it is marked too (strided numpy scans)
    n_marks = 0
    for k in range(cand_nodes.shape[0]):
        m = cand_nodes[k]
        o = cand_owner[k]
        c = np.cos(obs_yaw[o])
        sn = np.sin(obs_yaw[o])
        dx = node_xy[m, 0] - obs_xy[o, 0]
        dy = node_xy[m, 1] - obs_xy[o, 1]
        if not covers_lane_node(
            dx * c + dy * sn,
            dy * c - dx * sn,
            yaw_n[m] - obs_yaw[o],
            obs_hl[o],
            obs_hw[o],
            half_spacing,
            footprint_hw[m],
        ):
            continue
        for mm in (m - 1, m):
            if mm == m - 1 and node_s[m] <= 0.0:
                continue
            if occ[mm] < 0:
                occ[mm] = n + o
                occ_off[mm] = 0.0
                occ_v[mm] = obs_speed[o] * np.cos(obs_yaw[o] - yaw_n[mm])
                mark_nodes[n_marks] = mm
                n_marks += 1

    # 2. leader along the own path (own choice at the first lane end, default successors after)
    v_lead = np.zeros(n)
    for i in range(n):
        pos = frac[i] * edge_len[node[i]]
        cur = node[i]
        d = 0.0
        first_end = True
        gap_lead[i] = np.inf
        leader[i] = -1
        while d < lookahead_m:
            s = seg_of[cur]
            if cur == seg_start[s] + seg_count[s] - 1:
                if first_end:
                    nxt = seg_start[choice[i]] if choice[i] >= 0 else -1
                    first_end = False
                else:
                    nxt = next_node[cur]
            else:
                nxt = cur + 1
            if nxt < 0:
                break
            d += edge_len[cur]
            cur = nxt
            o = occ[cur]
            if o >= 0 and o != i:
                other_hl = hl[o] if o < n else half_spacing
                gap_lead[i] = d + occ_off[cur] - pos - hl[i] - other_hl
                leader[i] = o
                break
        v_lead[i] = occ_v[cur] if leader[i] >= 0 else 0.0

    # clear occupancy
    for i in range(n):
        occ[prev[i]] = -1
        occ[node[i]] = -1
        occ[nnode[i]] = -1
    for k in range(n_marks):
        occ[mark_nodes[k]] = -1

    # 3. junction entries: signals, stop signs, reservations
    cand = np.empty(n, np.int64)
    count = 0
    sig_stop = np.zeros(n, np.bool_)
    front = np.empty(n)
    inv_2b = 1.0 / (2.0 * b_comf)
    for i in range(n):
        pos = frac[i] * edge_len[node[i]]
        ent = entry_seg[node[i]]
        front[i] = entry_dist[node[i]] - pos - hl[i]
        gap_stop[i] = np.inf
        if ent < 0:
            continue
        kind = entry_kind[ent]
        stop = False
        if not ignore_signals[i]:
            if kind == ENTRY_LIGHT:
                st = light_state[entry_signal[ent]]
                if st == RED or (st == YELLOW and v[i] * v[i] <= 2.0 * yellow_decel * max(front[i], 0.01)):
                    stop = True
            elif kind == ENTRY_STOP:
                if front[i] <= stop_radius and v[i] <= stopped_speed:
                    stopped_at[i] = ent
                if stopped_at[i] != ent:
                    stop = True
        sig_stop[i] = stop
        if entry_of_pick[i] != ent:  # pick the junction lane as soon as the entry is ahead
            entry_of_pick[i] = ent
            cnt = succ_ptr[ent + 1] - succ_ptr[ent]
            entry_pick[i] = succ_idx[succ_ptr[ent] + min(int(rand[1, i] * cnt), cnt - 1)] if cnt > 0 else -1
        reserved = resv_entry[i] == ent
        # don't block the box: enter only with room for the whole vehicle past the junction lane, or
        # (scenario vehicles) behind a leader that drives on briskly
        pk = entry_pick[i]
        room = pk >= 0 and (
            gap_lead[i] >= front[i] + seg_length[pk] + 2.0 * hl[i] + s0
            or (box_follow[i] and v_lead[i] >= box_follow_mps)
        )
        hold = stop or not room
        if reserved and hold and front[i] > 0.0:  # held before the line: give the reservation back
            resv_seg[i] = -1
            resv_entry[i] = -1
            reserved = False
        if not reserved and not hold and front[i] <= request_m + v[i] * v[i] * inv_2b:
            if wait_since[i] > time_s:
                wait_since[i] = time_s
            cand[count] = i
            count += 1
    if count > 0:
        _grant(cand, count, entry_pick, entry_of_pick, node, seg_of, seg_junction, conflict_ptr, conflict_idx, resv_seg, resv_entry,
               wait_since, ids, busy, ego_busy, n, claimed, v, front, b_comf, time_s, patience_s, claim_until,
               claim_hold_s)  # fmt: skip
    for i in range(n):
        ent = entry_seg[node[i]]
        if ent < 0:
            continue
        if (sig_stop[i] or resv_entry[i] != ent) and front[i] > -0.5:
            gap_stop[i] = front[i]

    # 4. IDM and 5. advance
    q0 = 1.0 / (2.0 * np.sqrt(a_max * b_comf))
    for i in range(n):
        vi = v[i]
        v0 = min(speed_limit[node[i]] * v_scale[i], speed_cap[i])
        if v0 < 0.1:
            v0 = 0.1
        vt = vi * headway
        q = vi * q0
        s_lead = max(s0 + vt + q * (vi - v_lead[i]), 0.0) / max(gap_lead[i], 0.05)
        s_stop = (s0_stop + vt + q * vi) / max(gap_stop[i], 0.05)
        inter = max(s_lead, s_stop)
        a = a_max * (1.0 - (vi / v0) ** delta - inter * inter)
        a = min(max(a, -d_max), a_max)
        if forced_brake[i]:
            a = -d_max
        vn = max(vi + a * dt, 0.0)
        if gap_stop[i] < snap_gap and vn < crawl:
            vn = 0.0
        vn = min(vn, max(gap_lead[i] - safety_gap, 0.0) / dt)
        acc[i] = (vn - vi) / dt
        v[i] = vn

        # advance along the graph
        e = edge_len[node[i]]
        pos = frac[i] * e + vn * dt
        draws = 0
        for _ in range(MAX_HOPS_PER_TICK):
            if pos < e:
                break
            if nnode[i] == node[i]:  # dead end: stop at the lane end and ask for removal
                pos = e - 1e-3
                v[i] = 0.0
                remove_requested[i] = True
                break
            pos -= e
            new = nnode[i]
            prev[i] = node[i]
            entered = seg_of[new] != seg_of[node[i]]
            node[i] = new
            s = seg_of[new]
            if entered and s == entry_of_pick[i]:  # an entry lane: take the junction lane picked for it
                choice[i] = entry_pick[i]
            elif entered:
                cnt = succ_ptr[s + 1] - succ_ptr[s]
                if cnt > 0:
                    r = rand[0, i] if draws == 0 else (rand[0, i] * 7919.0) % 1.0
                    draws += 1
                    pick = min(int(r * cnt), cnt - 1)
                    choice[i] = succ_idx[succ_ptr[s] + pick]
                else:
                    choice[i] = -1
            last = seg_start[s] + seg_count[s] - 1
            if new == last:
                nnode[i] = seg_start[choice[i]] if choice[i] >= 0 else new
            else:
                nnode[i] = new + 1
            e = edge_len[new]
        f = pos / e
        frac[i] = min(max(f, 0.0), 1.0)

        # release a reservation once past the junction
        s = seg_of[node[i]]
        if resv_entry[i] >= 0 and s != resv_entry[i] and seg_junction[s] < 0:
            resv_seg[i] = -1
            resv_entry[i] = -1
            wait_since[i] = np.inf
            claim_until[i] = -np.inf

        # pose
        a0 = node[i]
        a1 = nnode[i]
        f = frac[i]
        for k in range(3):
            out_xyz[i, k] = xyz[a0, k] + (xyz[a1, k] - xyz[a0, k]) * f
        dy = (yaw_n[a1] - yaw_n[a0] + np.pi) % (2.0 * np.pi) - np.pi
        y = (yaw_n[a0] + dy * f + np.pi) % (2.0 * np.pi) - np.pi
        out_yaw[i] = y
        out_vel[i, 0] = v[i] * np.cos(y)
        out_vel[i, 1] = v[i] * np.sin(y)
        out_ctrl[i, 0] = min(max(acc[i] / a_max, 0.0), 1.0)
        out_ctrl[i, 1] = node_steer[a0]
        out_ctrl[i, 2] = min(max(-acc[i] / d_max, 0.0), 1.0)
