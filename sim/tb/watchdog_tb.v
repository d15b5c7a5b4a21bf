// watchdog alone, clock made here; Python drives timeout, kick and reload.
`timescale 1ns/1ps
`default_nettype none
module watchdog_tb ();
    reg clk = 1'b0;
    always #5 clk = ~clk;
    reg rst = 1'b1, kick = 1'b0, reload = 1'b0;
    reg [31:0] timeout = 0;
    wire fire;
    wire [15:0] expiries;
    reg [31:0] fired_at = 0, cycle = 0;
    always @(posedge clk) begin
        cycle <= cycle + 1;
        if (fire) fired_at <= cycle;
    end
    watchdog u_wdt (.clk(clk), .rst(rst), .timeout(timeout), .kick(kick), .reload(reload),
        .fire(fire), .expiries(expiries));
endmodule
