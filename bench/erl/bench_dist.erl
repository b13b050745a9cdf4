%% The Erlang side of the dist_* workloads (bench/dist_workloads.py): compiled on the
%% two erl nodes by the bench, so that erl <-> erl runs compiled loops.
-module(bench_dist).
-behaviour(gen_server).
-export([pong/0, ping/2, sink/1, throughput/2, call_loop/2]).
-export([init/1, handle_call/3, handle_cast/2]).

pong() ->
    receive
        {ping, From} -> From ! pong, pong();
        stop -> ok
    end.

ping(N, Node) ->
    loop_ping(10, Node),
    T0 = erlang:monotonic_time(),
    loop_ping(N, Node),
    erlang:convert_time_unit(erlang:monotonic_time() - T0, native, microsecond).

loop_ping(0, _) -> ok;
loop_ping(K, Node) ->
    {bench_ponger, Node} ! {ping, self()},
    receive pong -> ok end,
    loop_ping(K - 1, Node).

sink(Count) ->
    receive
        {sync, From} -> From ! {count, Count}, sink(0);
        stop -> ok;
        _ -> sink(Count + 1)
    end.

throughput(N, Node) ->
    T0 = erlang:monotonic_time(),
    send_n(N, {bench_sink, Node}),
    {bench_sink, Node} ! {sync, self()},
    receive {count, N} -> ok end,
    erlang:convert_time_unit(erlang:monotonic_time() - T0, native, microsecond).

send_n(0, _) -> ok;
send_n(K, To) -> To ! {msg, K}, send_n(K - 1, To).

call_loop(N, Node) ->
    Srv = {bench_counter, Node},
    call_n(10, Srv),
    T0 = erlang:monotonic_time(),
    call_n(N, Srv),
    erlang:convert_time_unit(erlang:monotonic_time() - T0, native, microsecond).

call_n(0, _) -> ok;
call_n(K, Srv) -> gen_server:call(Srv, incr), call_n(K - 1, Srv).

init(_) -> {ok, 0}.
handle_call(incr, _From, S) -> {reply, S + 1, S + 1}.
handle_cast(_, S) -> {noreply, S}.
